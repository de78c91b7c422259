//! The platform's alias grammar for session objects (threads, the `worker` object, files):
//! 1–256 bytes, `/`-joined segments of `[A-Za-z0-9._@-]+`, none of them `.` or `..`.
//!
//! One definition for the three places that check it: the host (refusing a guest's malformed
//! alias before a request is made), the emulator (answering as the platform does) and the
//! harness (checking a configured `session_prefix`).

/// The grammar in words, for error messages.
pub const GRAMMAR: &str =
    "1-256 characters: segments of [A-Za-z0-9._@-] joined by `/`, none of them `.` or `..`";

/// Longest alias in bytes.
pub const MAX_LEN: usize = 256;

/// Whether `alias` is a valid session object alias.
pub fn is_valid(alias: &str) -> bool {
    !alias.is_empty() && alias.len() <= MAX_LEN && alias.split('/').all(segment_is_valid)
}

fn segment_is_valid(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar() {
        for ok in ["worker", "tasks/t1", "a.b@c-d_e/f", "...", &"x".repeat(256)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/./b",
            "..",
            "a/../b",
            "a b",
            "é",
            &"x".repeat(257),
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// One segment the grammar allows: its characters, never `.` or `..`.
        fn segment() -> impl Strategy<Value = String> {
            "[A-Za-z0-9._@-]{1,24}".prop_filter("not . or ..", |s| s != "." && s != "..")
        }

        proptest! {
            #[test]
            fn joined_segments_within_the_length_are_valid(
                parts in proptest::collection::vec(segment(), 1..8)
            ) {
                let alias = parts.join("/");
                prop_assert_eq!(is_valid(&alias), alias.len() <= MAX_LEN);
            }

            #[test]
            fn a_character_outside_the_set_makes_it_invalid(
                prefix in "[A-Za-z0-9]{0,8}",
                bad in "[^A-Za-z0-9._@/-]",
                suffix in "[A-Za-z0-9]{0,8}",
            ) {
                let alias = format!("{prefix}{bad}{suffix}");
                prop_assert!(!is_valid(&alias));
            }

            #[test]
            fn empty_and_dot_segments_make_it_invalid(
                parts in proptest::collection::vec(segment(), 1..4),
                at in 0usize..4,
                bad in prop_oneof![Just(""), Just("."), Just("..")],
            ) {
                let mut parts = parts;
                let at = at.min(parts.len());
                parts.insert(at, bad.to_owned());
                prop_assert!(!is_valid(&parts.join("/")));
            }

        }
    }
}
