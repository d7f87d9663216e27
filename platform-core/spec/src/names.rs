//! Validated names and secrets (parse, don't validate): a value of these types is
//! always acceptable, so code past the boundary never re-checks it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use crate::FieldError;

/// What a DNS label must match (see [`check_dns_label`]).
pub const DNS_LABEL_PATTERN: &str = "^[a-z]([a-z0-9-]*[a-z0-9])?$";

/// The JSON Schema of a text field, from the same bounds its parser checks.
fn text_schema(
    min: Option<usize>,
    max: usize,
    pattern: Option<&str>,
    description: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(min)
        .max_length(Some(max))
        .pattern(pattern)
        .description(Some(description))
        .build()
        .into()
}

fn check_dns_label(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let bytes = value.as_bytes();
    let valid_chars = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let starts_with_letter = bytes.first().is_some_and(u8::is_ascii_lowercase);
    let ends_alphanumeric = bytes
        .last()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(valid_chars && starts_with_letter && ends_alphanumeric) {
        return Err(FieldError::new(
            field,
            "must use lowercase letters, digits and '-', start with a letter and end with a letter or digit",
        ));
    }
    Ok(())
}

macro_rules! dns_name {
    ($(#[$meta:meta])* $name:ident, field = $field:literal, max = $max:literal) => {
        $(#[$meta])*
        ///
        /// A DNS label: it becomes part of host names (`app.env.tenant.localhost`) and of
        /// Kubernetes namespace and object names, so it is held to their rules.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            /// Parses a name, naming the field it came from in the error.
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                check_dns_label($field, value, $max)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                text_schema(
                    Some(1),
                    $max,
                    Some(DNS_LABEL_PATTERN),
                    "Lowercase letters, digits and '-', starting with a letter and ending with a letter or digit",
                )
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

dns_name!(
    /// The short, URL-safe name of a tenant, e.g. `acme`.
    TenantSlug, field = "slug", max = 30
);
dns_name!(
    /// The name of an environment within a tenant, e.g. `prod`.
    EnvName, field = "name", max = 20
);
dns_name!(
    /// The name of an application within an environment, e.g. `checkout`.
    AppName, field = "name", max = 40
);

/// A login name: 2 to 64 of lowercase letters, digits, `.`, `_` and `-`, starting with
/// a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub const MIN_LEN: usize = 2;
    pub const MAX_LEN: usize = 64;
    pub const PATTERN: &str = "^[a-z0-9][a-z0-9._-]*$";

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let ok_len = (Self::MIN_LEN..=Self::MAX_LEN).contains(&value.len());
        let ok_first = value
            .as_bytes()
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_chars = value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if ok_len && ok_first && ok_chars {
            Ok(Self(value.to_owned()))
        } else {
            Err(FieldError::new(
                "username",
                "must be 2 to 64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for Username {
    fn schema() -> RefOr<Schema> {
        text_schema(
            Some(Self::MIN_LEN),
            Self::MAX_LEN,
            Some(Self::PATTERN),
            "A login name: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    }
}

impl utoipa::ToSchema for Username {}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A human-readable name shown in the console. Any text is allowed (it is always
/// escaped on output) except control characters; surrounding space is trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;
    /// No control characters, and something besides white space.
    pub const PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("display_name", "must not be empty"));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                "display_name",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(
                "display_name",
                "must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl utoipa::PartialSchema for DisplayName {
    fn schema() -> RefOr<Schema> {
        text_schema(
            Some(1),
            Self::MAX_CHARS,
            Some(Self::PATTERN),
            "A name shown to people: any text without control characters (surrounding space is trimmed)",
        )
    }
}

impl utoipa::ToSchema for DisplayName {}

/// The most characters a description holds.
pub const DESCRIPTION_MAX_CHARS: usize = 500;

/// Free text describing an object, as [`parse_description`] accepts it: documentation
/// only (descriptions are held as `String`).
#[derive(Debug)]
pub struct Description;

impl Description {
    /// No control characters but tab and newline.
    pub const PATTERN: &str = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$";
}

impl utoipa::PartialSchema for Description {
    fn schema() -> RefOr<Schema> {
        text_schema(
            None,
            DESCRIPTION_MAX_CHARS,
            Some(Description::PATTERN),
            "Free text without control characters other than tab and newline",
        )
    }
}

impl utoipa::ToSchema for Description {}

/// Free text describing an object; at most 500 characters.
pub fn parse_description(value: &str) -> Result<String, FieldError> {
    let trimmed = value.trim();
    if trimmed.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(FieldError::new(
            "description",
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldError::new(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// A password as typed. Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Characters, at least.
    pub const MIN_LEN: usize = 10;
    /// Characters, at most (so hashing stays cheap).
    pub const MAX_LEN: usize = 1024;

    /// A password chosen for a new account: long enough to resist guessing.
    pub fn parse_new(value: &str) -> Result<Self, FieldError> {
        let chars = value.chars().count();
        if chars < Self::MIN_LEN {
            return Err(FieldError::new(
                "password",
                format!("must be at least {} characters", Self::MIN_LEN),
            ));
        }
        if chars > Self::MAX_LEN {
            return Err(FieldError::new(
                "password",
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// A password offered at login: any value, but bounded so hashing stays cheap.
    pub fn from_login(value: &str) -> Option<Self> {
        (value.chars().count() <= Self::MAX_LEN).then(|| Self(value.to_owned()))
    }

    /// The schema of a new password.
    pub fn new_schema() -> RefOr<Schema> {
        text_schema(Some(Self::MIN_LEN), Self::MAX_LEN, None, "A new password")
    }

    /// A fresh random password of 20 characters from an unambiguous alphabet.
    pub fn generate() -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut rng = rand::thread_rng();
        let value = (0..20)
            .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
            .collect();
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema's pattern and length bounds, as a check on a value.
    fn schema_accepts(schema: RefOr<Schema>, value: &str) -> bool {
        let json = serde_json::to_value(schema).unwrap_or_default();
        let chars = value.chars().count() as u64;
        let min = json["minLength"].as_u64().unwrap_or(0);
        let max = json["maxLength"].as_u64().unwrap_or(u64::MAX);
        let pattern = json["pattern"].as_str().unwrap_or(".*");
        let regex = regex::Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        (min..=max).contains(&chars) && regex.is_match(value)
    }

    #[test]
    fn each_schema_accepts_exactly_what_its_parser_accepts() {
        use utoipa::PartialSchema;
        let long = |n: usize| "a".repeat(n);
        let samples: Vec<String> = [
            "", "a", "ab", "a-b", "a-", "-a", "1a", "a1", "A", "a_b", "a.b", "ab.", "a b", " a ",
            "\ta", "a\u{0}", "a\u{85}", "a\nb", "a\tb", "é", "\u{200b}", "ä-b",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([20, 21, 30, 31, 40, 41, 64, 65, 100, 101, 500, 501].map(long))
        .collect();
        for value in &samples {
            let cases = [
                ("AppName", AppName::schema(), AppName::parse(value).is_ok()),
                ("EnvName", EnvName::schema(), EnvName::parse(value).is_ok()),
                (
                    "TenantSlug",
                    TenantSlug::schema(),
                    TenantSlug::parse(value).is_ok(),
                ),
                (
                    "Username",
                    Username::schema(),
                    Username::parse(value).is_ok(),
                ),
            ];
            for (name, schema, parsed) in cases {
                assert_eq!(schema_accepts(schema, value), parsed, "{name} {value:?}");
            }
            // Display names and descriptions are trimmed first; the schema holds for
            // trimmed values (surrounding white space, control or not, is dropped).
            if value.trim() == value {
                assert_eq!(
                    schema_accepts(DisplayName::schema(), value),
                    DisplayName::parse(value).is_ok(),
                    "DisplayName {value:?}"
                );
                assert_eq!(
                    schema_accepts(Description::schema(), value),
                    parse_description(value).is_ok(),
                    "Description {value:?}"
                );
            }
        }
        for n in [9, 10, 1024, 1025] {
            assert_eq!(
                schema_accepts(Password::new_schema(), &"é".repeat(n)),
                Password::parse_new(&"é".repeat(n)).is_ok(),
                "password of {n} characters"
            );
        }
    }

    fn check_app(input: &str, expected: Result<(), &str>) {
        let got = AppName::parse(input).map(|_| ()).map_err(|e| e.message);
        assert_eq!(got, expected.map_err(str::to_owned), "input {input:?}");
    }

    #[test]
    fn app_names_follow_dns_label_rules() {
        let shape = "must use lowercase letters, digits and '-', start with a letter and end with a letter or digit";
        check_app("checkout", Ok(()));
        check_app("a", Ok(()));
        check_app("api-v2", Ok(()));
        check_app("", Err("must not be empty"));
        check_app("Checkout", Err(shape));
        check_app("2fast", Err(shape));
        check_app("trailing-", Err(shape));
        check_app("has_underscore", Err(shape));
        check_app("<script>", Err(shape));
        check_app("ünicode", Err(shape));
        check_app(&"a".repeat(41), Err("must be at most 40 characters"));
        check_app(&"a".repeat(40), Ok(()));
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<TenantSlug>("\"acme\"").is_ok());
        let err = serde_json::from_str::<TenantSlug>("\"ACME\"")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("slug")));
    }

    #[test]
    fn usernames_and_display_names() {
        assert!(Username::parse("alice.smith").is_ok());
        assert!(Username::parse("a").is_err());
        assert!(Username::parse("Alice").is_err());
        assert!(Username::parse("-alice").is_err());
        assert_eq!(
            DisplayName::parse("  Acme <script>  ").map(|d| d.as_str().to_owned()),
            Ok("Acme <script>".to_owned())
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("bell\u{7}").is_err());
    }

    #[test]
    fn passwords_are_redacted_and_bounded() {
        let pw = Password::generate();
        assert_eq!(pw.expose().len(), 20);
        assert_eq!(format!("{pw:?}"), "Password(<redacted>)");
        assert!(Password::parse_new("short").is_err());
        assert!(Password::parse_new("long enough password").is_ok());
        assert!(Password::from_login(&"x".repeat(2000)).is_none());
    }
}
