//! Which session an OpenAI request runs in, and what its messages become.
//!
//! A session key (`X-Session-Key`, alias `x-openclaw-session-key`, or `user` → `user:<user>`)
//! names a session in the caller's scope (project none): its own log is the history, so only
//! the last user message becomes the turn. Without a key the request gets a hidden one-off
//! session, and the earlier messages travel with the turn: as `options.history` for stateless
//! providers, folded into the prompt as a transcript for the others.

use super::errors::OpenAiError;
use super::models::ModelChoice;
use crate::config::ModelSwitch;
use crate::state::AppState;
use actix_web::HttpRequest;
use serde_json::{json, Map, Value};
use troupe_actors::ids::validate_session_key;
use troupe_actors::provider::HistoryMessage;
use troupe_actors::session::UpdateSession;
use troupe_actors::MAX_CLIENT_MESSAGE_ID_BYTES;
use troupe_actors::{BusyMode, NewSession, RuntimeError, SendTurn, SessionHandle, SessionId};

/// The headers that name a session key, in order of preference.
pub const SESSION_KEY_HEADERS: [&str; 2] = ["x-session-key", "x-openclaw-session-key"];

/// The response header that tells which session answered.
pub const SESSION_ID_HEADER: &str = "X-Session-Id";

/// `true` asks that a client disconnect stops the request's turn.
pub const ABORT_ON_DISCONNECT_HEADER: &str = "x-troupe-abort-on-disconnect";

/// Makes a send idempotent within the session (the turn's `client_message_id`).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A header's value as text; a header that is not visible ASCII is a 400.
fn header_text(req: &HttpRequest, name: &str) -> Result<Option<String>, OpenAiError> {
    match req.headers().get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim().to_string()))
            .map_err(|_| {
                OpenAiError::invalid_request(format!("header {name} is not valid text"))
                    .param(name.to_string())
            }),
    }
}

/// The session key the headers name, if any: the first of [`SESSION_KEY_HEADERS`] present.
/// Every one present must be a valid key, so a bad alias never hides behind a good header.
pub fn header_key(req: &HttpRequest) -> Result<Option<String>, OpenAiError> {
    let mut chosen = None;
    for name in SESSION_KEY_HEADERS {
        if let Some(key) = header_text(req, name)? {
            validate_session_key(&key).map_err(|reason| {
                OpenAiError::from(RuntimeError::InvalidSessionKey(reason)).param(name)
            })?;
            chosen = chosen.or(Some(key));
        }
    }
    Ok(chosen)
}

/// The session key a chat request's `user` names (`user:<user>`; none for an empty one). It
/// is checked even when a header names the session, so an invalid `user` is never accepted.
pub fn user_key(user: Option<String>) -> Result<Option<String>, OpenAiError> {
    let Some(key) = user.filter(|u| !u.is_empty()).map(|u| format!("user:{u}")) else {
        return Ok(None);
    };
    validate_session_key(&key).map_err(|reason| {
        OpenAiError::from(RuntimeError::InvalidSessionKey(reason)).param("user")
    })?;
    Ok(Some(key))
}

/// Whether the client asked that its disconnect stops the turn.
pub fn abort_on_disconnect(req: &HttpRequest) -> bool {
    header_text(req, ABORT_ON_DISCONNECT_HEADER)
        .ok()
        .flatten()
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The request's idempotency key, if any: the turn's `client_message_id`, so at most
/// [`MAX_CLIENT_MESSAGE_ID_BYTES`] bytes.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, OpenAiError> {
    let key = header_text(req, IDEMPOTENCY_HEADER)?.filter(|k| !k.is_empty());
    if key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_CLIENT_MESSAGE_ID_BYTES)
    {
        return Err(OpenAiError::invalid_request(format!(
            "header {IDEMPOTENCY_HEADER} has at most {MAX_CLIENT_MESSAGE_ID_BYTES} bytes"
        ))
        .param("Idempotency-Key"));
    }
    Ok(key)
}

/// The session a request runs in.
pub struct Target {
    /// Drives the session.
    pub handle: SessionHandle,
    /// A one-off session without a key: the request carries the whole conversation.
    pub one_off: bool,
    /// The provider keeps no conversation, so earlier messages go as `options.history`.
    pub stateless: bool,
}

/// The session `key` names in the caller's scope (created on first use), or a new hidden
/// one-off session when there is no key.
pub async fn keyed_or_one_off(
    state: &AppState,
    owner: &str,
    choice: &ModelChoice,
    key: Option<String>,
) -> Result<Target, OpenAiError> {
    let one_off = key.is_none();
    let (handle, created) = state
        .runtime
        .get_or_create(NewSession {
            owner: owner.to_string(),
            project: None,
            key,
            provider: choice.provider.clone(),
            title: None,
            model: choice.model.clone(),
            hidden: one_off,
        })
        .await?;
    if !created {
        follow_model(state, &handle, choice).await?;
    }
    target(state, handle, one_off, choice)
}

/// The caller's session `id` (a previous response's), which must run on the chosen provider.
pub async fn continued(
    state: &AppState,
    owner: &str,
    id: SessionId,
    choice: &ModelChoice,
) -> Result<Target, OpenAiError> {
    let handle = state.runtime.session_of(owner, id).await?;
    follow_model(state, &handle, choice).await?;
    target(state, handle, false, choice)
}

/// An existing session asked for with another model or provider switches to it, like
/// `PATCH /api/v1/sessions/{id} {model, provider}` (announced with `session.updated`), unless
/// `openai.model_switch = "refuse"`: then another provider is 400 and the model stays.
async fn follow_model(
    state: &AppState,
    handle: &SessionHandle,
    choice: &ModelChoice,
) -> Result<(), OpenAiError> {
    if state.config.openai.model_switch == ModelSwitch::Refuse {
        return check_provider(state, handle.id(), choice).await;
    }
    let session = handle.info().await?;
    let provider = (session.provider != choice.provider).then(|| choice.provider.clone());
    let model = choice
        .model
        .clone()
        .filter(|m| provider.is_some() || session.model.as_ref() != Some(m));
    if provider.is_some() || model.is_some() {
        handle
            .update(UpdateSession {
                model,
                provider,
                ..UpdateSession::default()
            })
            .await?;
    }
    Ok(())
}

fn target(
    state: &AppState,
    handle: SessionHandle,
    one_off: bool,
    choice: &ModelChoice,
) -> Result<Target, OpenAiError> {
    let stateless = state
        .runtime
        .providers()
        .get(&choice.provider)
        .is_some_and(|p| p.capabilities().stateless);
    Ok(Target {
        handle,
        one_off,
        stateless,
    })
}

/// With `openai.model_switch = "refuse"` a session keeps the provider it was made with: a
/// request naming another one is refused rather than silently answered by a different backend.
async fn check_provider(
    state: &AppState,
    id: SessionId,
    choice: &ModelChoice,
) -> Result<(), OpenAiError> {
    let record = state
        .runtime
        .store()
        .get_session(id)
        .await
        .map_err(troupe_actors::RuntimeError::from)?;
    match record {
        Some(record) if record.provider != choice.provider => {
            Err(OpenAiError::invalid_request(format!(
                "this session runs on provider `{}`, not `{}`; use a model of `{}` or another \
                 session key",
                record.provider, choice.provider, record.provider
            ))
            .param("model"))
        }
        _ => Ok(()),
    }
}

/// One message of a request, reduced to its role and text.
pub struct RoleText {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub text: String,
}

/// A request's messages: the system prompt, the earlier turns, the new user message.
#[derive(Debug, PartialEq)]
pub struct Conversation {
    /// System and developer messages joined (plus `instructions` for the Responses API).
    pub system: Option<String>,
    /// The user and assistant messages before the last user message.
    pub earlier: Vec<HistoryMessage>,
    /// The last user message: the turn.
    pub prompt: String,
}

impl Conversation {
    /// Splits `messages` (named `param` in errors); they must end with a user message.
    pub fn new(
        messages: Vec<RoleText>,
        instructions: Option<String>,
        param: &str,
    ) -> Result<Self, OpenAiError> {
        let mut system: Vec<String> = instructions.into_iter().collect();
        let mut turns = Vec::new();
        for message in messages {
            match message.role.as_str() {
                "system" | "developer" => system.push(message.text),
                "user" | "assistant" => turns.push(HistoryMessage {
                    role: message.role,
                    text: message.text,
                }),
                other => {
                    return Err(OpenAiError::invalid_request(format!(
                        "messages with role `{other}` are not supported; use system, developer, \
                         user or assistant"
                    ))
                    .param(param))
                }
            }
        }
        let last = turns.pop().filter(|m| m.role == "user").ok_or_else(|| {
            OpenAiError::invalid_request("the messages must end with a user message").param(param)
        })?;
        if last.text.is_empty() {
            return Err(
                OpenAiError::invalid_request("the last user message is empty").param(param),
            );
        }
        Ok(Conversation {
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            earlier: turns,
            prompt: last.text,
        })
    }

    /// The turn to send to `target`, with `options` added to the provider options.
    pub fn into_turn(
        self,
        target: &Target,
        mut options: Map<String, Value>,
        client_message_id: Option<String>,
    ) -> Result<SendTurn, RuntimeError> {
        if let Some(system) = self.system {
            options.insert("system".into(), json!(system));
        }
        let mut content = self.prompt;
        if target.one_off && !self.earlier.is_empty() {
            if target.stateless {
                options.insert("history".into(), json!(self.earlier));
            } else {
                content = transcript(&self.earlier, &content);
            }
        }
        SendTurn::parse(
            content,
            BusyMode::Enqueue,
            client_message_id,
            Some(Value::Object(options)),
        )
    }
}

/// The earlier messages and the new one as one prompt, for a provider that keeps its own
/// conversation and so takes no history: it sees what was said so far as part of the message.
fn transcript(earlier: &[HistoryMessage], prompt: &str) -> String {
    let mut text = String::from("The conversation so far:\n\n");
    for message in earlier {
        text.push_str(&format!("{}: {}\n\n", message.role, message.text));
    }
    text.push_str("The user's new message:\n\n");
    text.push_str(prompt);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, text: &str) -> RoleText {
        RoleText {
            role: role.into(),
            text: text.into(),
        }
    }

    #[test]
    fn the_last_user_message_is_the_turn_and_system_messages_join() {
        let c = Conversation::new(
            vec![
                msg("system", "be brief"),
                msg("user", "hi"),
                msg("assistant", "hello"),
                msg("developer", "no emoji"),
                msg("user", "again"),
            ],
            Some("obey".into()),
            "messages",
        )
        .unwrap();
        assert_eq!(c.prompt, "again");
        assert_eq!(c.system.as_deref(), Some("obey\n\nbe brief\n\nno emoji"));
        assert_eq!(c.earlier.len(), 2);
    }

    #[test]
    fn messages_must_end_with_a_user_message() {
        let e = Conversation::new(
            vec![msg("user", "hi"), msg("assistant", "x")],
            None,
            "messages",
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(Conversation::new(vec![msg("tool", "x")], None, "messages").is_err());
    }
}
