//! How the platform reads a broker's answer, as the specification's tables say: what
//! succeeded, what to poll, what was refused, and when to perform orphan mitigation
//! (delete what the broker may have made although the platform cannot be sure it
//! exists).

/// A request the platform makes that changes something at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Provision,
    Update,
    Deprovision,
    Bind,
    Unbind,
}

impl Call {
    /// Whether it removes something (a 410 is then a success).
    pub fn removes(self) -> bool {
        matches!(self, Self::Deprovision | Self::Unbind)
    }

    /// Whether it makes something that orphan mitigation may have to remove.
    fn creates(self) -> bool {
        matches!(self, Self::Provision | Self::Bind)
    }
}

/// What came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An HTTP status, and whether the body is what the specification says it is
    /// for that status (a JSON object of the right shape).
    Status { code: u16, well_formed: bool },
    /// The request was sent and no answer came in time.
    Timeout,
    /// The request never reached the broker (connection refused, no route, DNS).
    NotSent,
}

/// What the platform makes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, synchronously.
    Done,
    /// 202: poll `last_operation`.
    Accepted,
    /// The thing is not there (410 to a removal): a success.
    Gone,
    /// The broker refused the request (a 4xx): nothing was made, nothing to clean up.
    Refused,
    /// The broker could not take it now (408, 422 `ConcurrencyError`, or it was not
    /// reached): nothing was made; ask again later.
    TryLater,
    /// A failure. With `mitigate`, delete what may exist and keep trying until the
    /// broker says it is gone.
    Failed { mitigate: bool },
}

/// Reads the answer to `call` (the orphan-mitigation table of the specification).
/// `concurrency` says whether a 422's error code was `ConcurrencyError`.
pub fn interpret(call: Call, answer: Answer, concurrency: bool) -> Outcome {
    let mitigate_5xx = !matches!(call, Call::Update);
    match answer {
        Answer::NotSent => Outcome::TryLater,
        Answer::Timeout => Outcome::Failed {
            mitigate: call.creates(),
        },
        Answer::Status { code, well_formed } => match code {
            200 if well_formed => Outcome::Done,
            200 => Outcome::Failed { mitigate: false },
            201 if well_formed => Outcome::Done,
            202 if well_formed => Outcome::Accepted,
            201 | 202 => Outcome::Failed {
                mitigate: call.creates(),
            },
            203..=299 => Outcome::Failed {
                mitigate: mitigate_5xx,
            },
            408 => Outcome::TryLater,
            410 if call.removes() => Outcome::Gone,
            422 if concurrency => Outcome::TryLater,
            400..=499 => Outcome::Refused,
            500..=599 => Outcome::Failed {
                mitigate: mitigate_5xx,
            },
            // 1xx and 3xx are not answers this API gives.
            _ => Outcome::Failed {
                mitigate: mitigate_5xx,
            },
        },
    }
}

/// What a `last_operation` poll says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    InProgress,
    Succeeded,
    /// With `mitigate` for a failed provision, deprovision, bind or unbind.
    Failed {
        mitigate: bool,
    },
    /// 410 while removing: a success, forget it.
    Gone,
    /// Not a valid answer: poll again (until the maximum polling duration).
    Again,
}

/// Reads a `last_operation` answer for an operation started by `call`: `state` is the
/// body's state when the body parsed.
pub fn interpret_poll(call: Call, code: u16, state: Option<crate::wire::OperationState>) -> Poll {
    use crate::wire::OperationState;
    match (code, state) {
        (200, Some(OperationState::InProgress)) => Poll::InProgress,
        (200, Some(OperationState::Succeeded)) => Poll::Succeeded,
        (200, Some(OperationState::Failed)) => Poll::Failed {
            mitigate: !matches!(call, Call::Update),
        },
        (410, _) if call.removes() => Poll::Gone,
        _ => Poll::Again,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::OperationState;

    fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            well_formed: true,
        }
    }

    fn malformed(code: u16) -> Answer {
        Answer::Status {
            code,
            well_formed: false,
        }
    }

    /// The specification's orphan-mitigation table, row by row.
    #[test]
    fn answers_are_read_as_the_orphan_mitigation_table_says() {
        use Call::*;
        let no = Outcome::Failed { mitigate: false };
        let yes = Outcome::Failed { mitigate: true };
        let table: &[(Call, Answer, Outcome)] = &[
            // All: 200 success; 200 malformed: failure, no mitigation.
            (Provision, status(200), Outcome::Done),
            (Deprovision, status(200), Outcome::Done),
            (Bind, malformed(200), no),
            (Provision, malformed(200), no),
            // All: 201 success; malformed 201 to provision or bind: mitigate.
            (Provision, status(201), Outcome::Done),
            (Bind, status(201), Outcome::Done),
            (Provision, malformed(201), yes),
            (Bind, malformed(201), yes),
            // All: 202 success; malformed 202 to provision or bind: mitigate.
            (Update, status(202), Outcome::Accepted),
            (Deprovision, status(202), Outcome::Accepted),
            (Provision, malformed(202), yes),
            (Bind, malformed(202), yes),
            (Update, malformed(202), no),
            // Other 2xx: provision/deprovision and bind/unbind mitigate, update not.
            (Provision, status(204), yes),
            (Deprovision, status(204), yes),
            (Unbind, status(204), yes),
            (Update, status(204), no),
            // 408: the request was not received: no mitigation, try again.
            (Provision, status(408), Outcome::TryLater),
            // Other 4xx: rejected, nothing to clean.
            (Provision, status(400), Outcome::Refused),
            (Provision, status(409), Outcome::Refused),
            (Provision, status(422), Outcome::Refused),
            (Update, status(422), Outcome::Refused),
            // 410 to a removal: gone, a success.
            (Deprovision, status(410), Outcome::Gone),
            (Unbind, status(410), Outcome::Gone),
            (Provision, status(410), Outcome::Refused),
            // 5xx: provision/deprovision and bind/unbind mitigate; update does not.
            (Provision, status(500), yes),
            (Deprovision, status(503), yes),
            (Bind, status(500), yes),
            (Unbind, status(502), yes),
            (Update, status(500), no),
            // Timeouts: provision and bind mitigate, the others do not.
            (Provision, Answer::Timeout, yes),
            (Bind, Answer::Timeout, yes),
            (Deprovision, Answer::Timeout, no),
            (Update, Answer::Timeout, no),
            (Unbind, Answer::Timeout, no),
            // Never reached: nothing happened.
            (Provision, Answer::NotSent, Outcome::TryLater),
        ];
        for &(call, answer, expected) in table {
            assert_eq!(
                interpret(call, answer, false),
                expected,
                "{call:?} {answer:?}"
            );
        }
    }

    #[test]
    fn a_concurrency_error_is_never_mitigated() {
        assert_eq!(
            interpret(Call::Provision, status(422), true),
            Outcome::TryLater
        );
    }

    #[test]
    fn polls_are_read_as_the_specification_says() {
        use OperationState::*;
        assert_eq!(
            interpret_poll(Call::Provision, 200, Some(InProgress)),
            Poll::InProgress
        );
        assert_eq!(
            interpret_poll(Call::Provision, 200, Some(Failed)),
            Poll::Failed { mitigate: true }
        );
        assert_eq!(
            interpret_poll(Call::Update, 200, Some(Failed)),
            Poll::Failed { mitigate: false }
        );
        assert_eq!(
            interpret_poll(Call::Deprovision, 200, Some(Succeeded)),
            Poll::Succeeded
        );
        assert_eq!(interpret_poll(Call::Deprovision, 410, None), Poll::Gone);
        // 410 while creating is invalid: keep polling.
        assert_eq!(interpret_poll(Call::Provision, 410, None), Poll::Again);
        assert_eq!(interpret_poll(Call::Provision, 500, None), Poll::Again);
        assert_eq!(interpret_poll(Call::Provision, 200, None), Poll::Again);
    }
}
