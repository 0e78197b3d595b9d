//! The history window of a stateless provider: how much of a session's conversation is sent
//! with each attempt. The log keeps everything; only what is sent is bounded.

use super::HistoryMessage;
use serde::{Deserialize, Serialize};

/// Bounds on the earlier messages sent to a stateless provider. The oldest messages drop
/// first; the system prompt and the current message are never part of the history, so they
/// always go. Unset bounds send everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryWindow {
    /// The most earlier messages (user and assistant) sent.
    pub max_messages: Option<usize>,
    /// The most characters of earlier messages sent, all of them together.
    pub max_chars: Option<usize>,
}

/// How much history an attempt was sent: the `history` of its `turn.started`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySent {
    /// Earlier messages sent.
    pub messages: usize,
    /// Characters of those messages.
    pub chars: usize,
    /// Earlier messages left out by the window (the oldest).
    pub dropped: usize,
}

impl HistoryWindow {
    /// Whether it bounds anything.
    pub fn is_bounded(&self) -> bool {
        self.max_messages.is_some() || self.max_chars.is_some()
    }

    /// The newest messages of `history` that fit, oldest first, and what was sent. A window
    /// never starts with an assistant message when it dropped something: the conversation it
    /// sends opens with a user message, as the provider expects.
    pub fn apply(&self, mut history: Vec<HistoryMessage>) -> (Vec<HistoryMessage>, HistorySent) {
        let mut keep = 0;
        let mut chars = 0;
        for message in history.iter().rev() {
            let len = message.text.chars().count();
            if self.max_messages.is_some_and(|max| keep >= max)
                || self.max_chars.is_some_and(|max| chars + len > max)
            {
                break;
            }
            keep += 1;
            chars += len;
        }
        let mut first = history.len() - keep;
        while first > 0 && first < history.len() && history[first].role != "user" {
            chars -= history[first].text.chars().count();
            first += 1;
        }
        let dropped = first;
        let kept = history.split_off(first);
        let sent = HistorySent {
            messages: kept.len(),
            chars,
            dropped,
        };
        (kept, sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(turns: usize) -> Vec<HistoryMessage> {
        (0..turns)
            .flat_map(|i| {
                [
                    HistoryMessage {
                        role: "user".into(),
                        text: format!("question {i}"),
                    },
                    HistoryMessage {
                        role: "assistant".into(),
                        text: format!("answer {i}"),
                    },
                ]
            })
            .collect()
    }

    #[test]
    fn an_unbounded_window_sends_everything() {
        let (kept, sent) = HistoryWindow::default().apply(conversation(3));
        assert_eq!(kept, conversation(3));
        assert_eq!((sent.messages, sent.dropped), (6, 0));
    }

    #[test]
    fn the_oldest_messages_drop_first_and_the_window_opens_with_a_user_message() {
        let window = HistoryWindow {
            max_messages: Some(3),
            max_chars: None,
        };
        let (kept, sent) = window.apply(conversation(5));
        // The newest 3 would open with an assistant message; it goes too.
        assert_eq!(kept, conversation(5)[8..].to_vec());
        assert_eq!((sent.messages, sent.dropped), (2, 8));
        assert_eq!(sent.chars, "question 4answer 4".len());
    }

    #[test]
    fn a_character_budget_counts_every_message_sent() {
        let window = HistoryWindow {
            max_messages: None,
            max_chars: Some(40),
        };
        let (kept, sent) = window.apply(conversation(10));
        assert!(sent.chars <= 40);
        assert_eq!(kept.first().map(|m| m.role.as_str()), Some("user"));
        assert_eq!(kept.last(), conversation(10).last());
        assert_eq!(sent.messages + sent.dropped, 20);
    }
}
