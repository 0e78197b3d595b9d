//! Failure classification shared by every provider: an HTTP status and an error text become a
//! [`FailureClass`] and a stable code (DESIGN.md §5), with secrets taken out of the message.

use troupe_actors::{FailureClass, ProviderError};

/// The longest error message kept in an event.
const MAX_MESSAGE_CHARS: usize = 2000;

/// Texts that mean the prompt or the conversation no longer fits the model's context.
const PROMPT_TOO_LONG: &[&str] = &[
    "prompt is too long",
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "input is too long",
    "too many tokens",
];

/// Texts that mean the provider no longer knows the conversation it was asked to resume.
const RESUME_LOST: &[&str] = &[
    "no conversation found",
    "no rollout found",
    "session not found",
    "thread not found",
    "invalid session identifier",
    "no previous sessions",
];

/// Texts that mean the credentials are missing or wrong.
const AUTH: &[&str] = &[
    "invalid api key",
    "invalid x-api-key",
    "authentication_error",
    "authentication failed",
    "authentication required",
    "unauthorized",
    "not logged in",
    "please run /login",
    "api key not valid",
    "incorrect api key",
];

/// Texts of rate limits and quotas that refill.
const RATE_LIMITED: &[&str] = &[
    "rate limit",
    "rate_limit",
    "too many requests",
    "usage limit",
    "resource_exhausted",
];

/// Texts of a server that is busy or broken for now.
const UNAVAILABLE: &[&str] = &[
    "internal server error",
    "api_error",
    "service unavailable",
    "bad gateway",
    "gateway timeout",
    "timed out",
    "econnreset",
    "connection reset",
    "stream disconnected",
];

/// Texts of a model name the provider does not know.
const UNKNOWN_MODEL: &[&str] = &[
    "model not found",
    "model_not_found",
    "unknown model",
    "invalid model",
];

fn mentions(lower: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| lower.contains(n))
}

/// Classifies a failure from an HTTP status (when the provider reported one) and its text.
pub fn classify(status: Option<u16>, text: &str) -> ProviderError {
    let lower = text.to_lowercase();
    let (class, code) = if mentions(&lower, PROMPT_TOO_LONG) {
        (FailureClass::Terminal, "prompt_too_long")
    } else if mentions(&lower, RESUME_LOST) {
        (FailureClass::ResumeLost, "provider_session_lost")
    } else if status == Some(401) || mentions(&lower, AUTH) {
        (FailureClass::Terminal, "invalid_api_key")
    } else if status == Some(403) || lower.contains("permission_error") {
        (FailureClass::Terminal, "forbidden")
    } else if status == Some(429) || mentions(&lower, RATE_LIMITED) {
        (FailureClass::Transient, "rate_limited")
    } else if status == Some(529) || lower.contains("overloaded") {
        (FailureClass::Transient, "overloaded")
    } else if matches!(status, Some(408 | 409 | 425 | 500..=599)) || mentions(&lower, UNAVAILABLE) {
        (FailureClass::Transient, "provider_unavailable")
    } else if status == Some(404) || mentions(&lower, UNKNOWN_MODEL) {
        (FailureClass::Terminal, "model_not_found")
    } else if matches!(status, Some(400 | 413 | 422))
        || lower.contains("invalid_request")
        || lower.contains("invalid request")
    {
        (FailureClass::Terminal, "invalid_request")
    } else {
        (FailureClass::Transient, "provider_error")
    };
    ProviderError::new(class, code, truncate(text))
}

/// Cuts a message to a readable length, on a character boundary.
pub fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Replaces every secret value found in `text` with `[redacted]`.
pub fn redact(mut text: String, secrets: &[String]) -> String {
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "[redacted]");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_too_long_is_terminal_whatever_the_status() {
        let e = classify(
            Some(400),
            "Prompt is too long · 210000 tokens > 200000 maximum",
        );
        assert_eq!(
            (e.class, e.code.as_str()),
            (FailureClass::Terminal, "prompt_too_long")
        );
    }

    #[test]
    fn statuses_map_to_classes() {
        let cases = [
            (401, FailureClass::Terminal, "invalid_api_key"),
            (403, FailureClass::Terminal, "forbidden"),
            (404, FailureClass::Terminal, "model_not_found"),
            (400, FailureClass::Terminal, "invalid_request"),
            (429, FailureClass::Transient, "rate_limited"),
            (529, FailureClass::Transient, "overloaded"),
            (503, FailureClass::Transient, "provider_unavailable"),
        ];
        for (status, class, code) in cases {
            let e = classify(Some(status), "boom");
            assert_eq!((e.class, e.code.as_str()), (class, code), "status {status}");
        }
    }

    #[test]
    fn lost_conversation_is_resume_lost() {
        let e = classify(None, "No conversation found with session ID: abc");
        assert_eq!(e.class, FailureClass::ResumeLost);
    }

    #[test]
    fn unknown_text_is_transient() {
        assert_eq!(classify(None, "segfault").class, FailureClass::Transient);
    }

    #[test]
    fn redact_hides_secrets_and_truncate_bounds() {
        let text = redact(
            "key sk-abcdef123456 leaked".into(),
            &["sk-abcdef123456".into()],
        );
        assert_eq!(text, "key [redacted] leaked");
        assert!(truncate(&"x".repeat(10_000)).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
