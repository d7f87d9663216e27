-- A session token carries its user's session generation (claim `gen`) and is refused
-- once the generation has moved on. Disabling the user, changing their password and
-- removing one of their memberships move it on, so that re-enabling an account does not
-- bring back the tokens issued before it was disabled. Tokens issued before this
-- migration carry no `gen`, read as 0: they stay valid until the first such change.
ALTER TABLE users ADD COLUMN session_generation integer NOT NULL DEFAULT 0;
