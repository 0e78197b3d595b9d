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
    "exceeds the maximum number of tokens",
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
    "resource has been exhausted",
    "quota",
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
    "high demand",
];

/// The start of Codex's text for a provider whose key variable is not set.
const MISSING_ENV: &str = "missing environment variable";

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

/// The HTTP status an agent CLI wrote into an error text: Gemini CLI's
/// `[API Error: {"error":{"code":400,…}}]`, Codex's `unexpected status 401 Unauthorized: …` and
/// `exceeded retry limit, last status: 429 …`.
pub fn embedded_status(text: &str) -> Option<u16> {
    if let Some((_, rest)) = text.split_once("[API Error: ") {
        let first = serde_json::Deserializer::from_str(rest)
            .into_iter::<serde_json::Value>()
            .next();
        if let Some(Ok(value)) = first {
            let code = value
                .pointer("/error/code")
                .and_then(serde_json::Value::as_u64);
            if let Some(status) = code.and_then(|c| u16::try_from(c).ok()) {
                return Some(status);
            }
        }
    }
    ["unexpected status ", "last status: "]
        .iter()
        .find_map(|marker| {
            let (_, rest) = text.split_once(marker)?;
            let status: u16 = rest.get(..3)?.parse().ok()?;
            (100..=599).contains(&status).then_some(status)
        })
}

/// Classifies a failure from an HTTP status (when the provider reported one, else the one its
/// text carries) and its text.
pub fn classify(status: Option<u16>, text: &str) -> ProviderError {
    let status = status.or_else(|| embedded_status(text));
    let lower = text.to_lowercase();
    if lower.contains(MISSING_ENV) {
        // Troupe passes only allow-listed variables, so the usual cause is a key variable the
        // provider's configuration does not name.
        let message = format!(
            "{} (set it in Troupe's environment and name it in the provider's `api_key_env` or \
             `pass_env`; no other variable reaches the agent)",
            text.trim()
        );
        return ProviderError::terminal("missing_api_key", truncate(&message));
    }
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
    fn statuses_embedded_in_cli_texts_are_read() {
        let gemini =
            r#"[API Error: {"error":{"code":401,"message":"no","status":"UNAUTHENTICATED"}}]"#;
        assert_eq!(embedded_status(gemini), Some(401));
        let codex = "unexpected status 403 Forbidden: nope, url: http://x/v1/responses";
        assert_eq!(embedded_status(codex), Some(403));
        assert_eq!(
            embedded_status("exceeded retry limit, last status: 429 Too Many Requests"),
            Some(429)
        );
        assert_eq!(embedded_status("[API Error: quota]"), None);
        assert_eq!(embedded_status("unexpected status 12"), None);
        let e = classify(None, gemini);
        assert_eq!(
            (e.class, e.code.as_str()),
            (FailureClass::Terminal, "invalid_api_key")
        );
        let e = classify(None, r#"[API Error: {"error":{"code":500,"message":"x"}}]"#);
        assert_eq!(e.class, FailureClass::Transient);
    }

    #[test]
    fn codex_texts_are_classified() {
        let e = classify(
            None,
            "We\u{2019}re currently experiencing high demand, which may cause temporary errors.",
        );
        assert_eq!(
            (e.class, e.code.as_str()),
            (FailureClass::Transient, "provider_unavailable")
        );
        let e = classify(None, "Missing environment variable: `OPENAI_API_KEY`.");
        assert_eq!(
            (e.class, e.code.as_str()),
            (FailureClass::Terminal, "missing_api_key")
        );
        assert!(e.message.contains("`OPENAI_API_KEY`"), "{}", e.message);
        let e = classify(
            None,
            "Error: thread/resume: thread/resume failed: no rollout found for thread id t-1 \
             (code -32600)",
        );
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
