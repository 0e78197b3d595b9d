//! Usage and budgets: what an attempt cost (tokens and US dollars), normalized from whatever a
//! provider reports, the totals kept per session and per owner per UTC day, the price table that
//! fills in a cost from tokens, and the budgets checked before and during attempts.
//!
//! Invariant: a total changes only in the store batch that carries the event reporting the
//! change (`status` with `usage` mid-run, `error` of a failed attempt, `turn.completed`), so a
//! crash never loses acknowledged usage nor counts it twice.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Tokens and cost of some work. Input tokens include cached ones (`cached_tokens` says how many
/// of them were served from a cache); `total_tokens` is input plus output and is what token
/// budgets count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Generated tokens (reasoning included).
    pub output_tokens: u64,
    /// The part of `input_tokens` read from a prompt cache.
    pub cached_tokens: u64,
    /// `input_tokens + output_tokens`.
    pub total_tokens: u64,
    /// Cost in US dollars: the provider's own figure, else the configured price table's.
    pub cost_usd: f64,
}

impl Usage {
    /// Usage of these token counts and cost.
    pub fn new(input_tokens: u64, output_tokens: u64, cached_tokens: u64, cost_usd: f64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
            cached_tokens,
            total_tokens: input_tokens + output_tokens,
            cost_usd,
        }
    }

    /// Whether nothing was used.
    pub fn is_zero(&self) -> bool {
        self.input_tokens == 0
            && self.output_tokens == 0
            && self.cached_tokens == 0
            && self.cost_usd == 0.0
    }

    /// The sum of both.
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage::new(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cost_usd + other.cost_usd,
        )
    }

    /// What `self` (a later cumulative report) adds to `counted` (what was counted already);
    /// never negative, a report that went down adds nothing.
    pub fn beyond(&self, counted: &Usage) -> Usage {
        Usage::new(
            self.input_tokens.saturating_sub(counted.input_tokens),
            self.output_tokens.saturating_sub(counted.output_tokens),
            self.cached_tokens.saturating_sub(counted.cached_tokens),
            (self.cost_usd - counted.cost_usd).max(0.0),
        )
    }

    /// The larger of each figure.
    pub fn max(&self, other: &Usage) -> Usage {
        Usage::new(
            self.input_tokens.max(other.input_tokens),
            self.output_tokens.max(other.output_tokens),
            self.cached_tokens.max(other.cached_tokens),
            self.cost_usd.max(other.cost_usd),
        )
    }

    /// The wire JSON.
    pub fn to_json(&self) -> Value {
        json!(self)
    }

    /// Normalizes a provider's usage figures, whichever names it uses: Claude's `usage`
    /// (`input_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`,
    /// `output_tokens`), Codex's (`input_tokens`, `cached_input_tokens`, `output_tokens`),
    /// Gemini CLI's `stats` (`input_tokens`/`input`, `output_tokens`, `cached`), OpenAI's
    /// (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`) and ACP's
    /// (`inputTokens`, `outputTokens`, `cachedReadTokens`). `None` when it reports nothing.
    pub fn from_provider(usage: Option<&Value>, cost_usd: Option<f64>) -> Option<Usage> {
        let figures = usage.filter(|u| u.is_object());
        if figures.is_none() && cost_usd.is_none() {
            return None;
        }
        let get = |names: &[&str]| -> u64 {
            names
                .iter()
                .find_map(|name| {
                    let mut value = figures?;
                    for part in name.split('.') {
                        value = value.get(part)?;
                    }
                    value.as_u64()
                })
                .unwrap_or(0)
        };
        // Anthropic counts cache reads and writes apart from `input_tokens`; the others count
        // cached tokens inside their input figure.
        let cache_read = get(&["cache_read_input_tokens"]);
        let cache_write = get(&["cache_creation_input_tokens"]);
        let anthropic = figures.is_some_and(|u| {
            u.get("cache_read_input_tokens").is_some()
                || u.get("cache_creation_input_tokens").is_some()
        });
        let (input, cached) = if anthropic {
            (
                get(&["input_tokens"]) + cache_read + cache_write,
                cache_read,
            )
        } else {
            (
                get(&[
                    "input_tokens",
                    "prompt_tokens",
                    "inputTokens",
                    "input",
                    "promptTokenCount",
                ]),
                get(&[
                    "cached_tokens",
                    "cached_input_tokens",
                    "prompt_tokens_details.cached_tokens",
                    "input_tokens_details.cached_tokens",
                    "cachedReadTokens",
                    "cached",
                    "cachedContentTokenCount",
                ]),
            )
        };
        let output = get(&[
            "output_tokens",
            "completion_tokens",
            "outputTokens",
            "candidatesTokenCount",
        ]);
        Some(Usage::new(input, output, cached, cost_usd.unwrap_or(0.0)))
    }
}

/// Prices of one model in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Price {
    /// Per million uncached input tokens.
    pub input_per_mtok: f64,
    /// Per million output tokens.
    pub output_per_mtok: f64,
    /// Per million cached input tokens (default: the input price).
    pub cached_per_mtok: Option<f64>,
}

impl Price {
    /// What `usage`'s tokens cost at these prices.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let uncached = usage.input_tokens - cached;
        (uncached as f64 * self.input_per_mtok
            + cached as f64 * self.cached_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// A spending limit; a missing figure is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    /// Most US dollars.
    pub max_cost_usd: Option<f64>,
    /// Most tokens (input plus output).
    pub max_tokens: Option<u64>,
}

impl Budget {
    /// Whether it limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.max_cost_usd.is_none() && self.max_tokens.is_none()
    }

    /// The tighter of both, figure by figure.
    pub fn tightest(&self, other: &Budget) -> Budget {
        fn min<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(if b < a { b } else { a }),
                (a, b) => a.or(b),
            }
        }
        Budget {
            max_cost_usd: min(self.max_cost_usd, other.max_cost_usd),
            max_tokens: min(self.max_tokens, other.max_tokens),
        }
    }

    /// Whether `other` allows nothing beyond this one (each figure at most this one's).
    pub fn covers(&self, other: &Budget) -> bool {
        let cost = match (self.max_cost_usd, other.max_cost_usd) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => theirs <= mine,
            (Some(_), None) => false,
        };
        let tokens = match (self.max_tokens, other.max_tokens) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => theirs <= mine,
            (Some(_), None) => false,
        };
        cost && tokens
    }

    /// Why `used` leaves nothing to spend (it reached a limit): checked before an attempt.
    pub fn reached(&self, used: &Usage, what: &str) -> Option<String> {
        self.check(used, what, |used, max| used >= max)
    }

    /// Why `used` went past a limit: checked while an attempt streams.
    pub fn passed(&self, used: &Usage, what: &str) -> Option<String> {
        self.check(used, what, |used, max| used > max)
    }

    fn check(&self, used: &Usage, what: &str, over: impl Fn(f64, f64) -> bool) -> Option<String> {
        if let Some(max) = self.max_cost_usd {
            if over(used.cost_usd, max) {
                return Some(format!(
                    "{what} budget of ${max} is spent (${:.6} used)",
                    used.cost_usd
                ));
            }
        }
        if let Some(max) = self.max_tokens {
            if over(used.total_tokens as f64, max as f64) {
                return Some(format!(
                    "{what} budget of {max} tokens is spent ({} used)",
                    used.total_tokens
                ));
            }
        }
        None
    }
}

/// A session's totals: all its turns, and the latest turn.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionUsage {
    /// Every attempt of every turn, failed and retried ones included.
    pub total: Usage,
    /// The turn that ran last (or runs now), with its usage so far.
    pub turn: Option<TurnUsage>,
}

/// The usage of one turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TurnUsage {
    /// The turn.
    pub turn_id: crate::ids::TurnId,
    /// All its attempts so far.
    #[serde(flatten)]
    pub usage: Usage,
}

/// One owner's usage on one UTC day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnerDayUsage {
    /// The owner.
    pub owner: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// What the owner's sessions used that day.
    #[serde(flatten)]
    pub usage: Usage,
}

/// An addition to an owner's day, written atomically with the session batch that reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageIncrement {
    /// The owner.
    pub owner: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    /// What is added.
    pub usage: Usage,
}

/// Today's UTC day as `YYYY-MM-DD`, the key of owner totals.
pub fn utc_day() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// Prices and budgets of a runtime.
#[derive(Clone, Debug, Default)]
pub struct UsageSettings {
    /// Every session's budget unless the session has its own.
    pub session_budget: Budget,
    /// Per provider, a session budget for its sessions (the tighter of it and the global one).
    pub provider_budgets: HashMap<String, Budget>,
    /// Every owner's daily cap unless the owner has its own.
    pub owner_daily: Budget,
    /// Per owner, a daily cap that replaces the global one.
    pub owner_daily_by_owner: HashMap<String, Budget>,
    /// Per provider, the price of its default model and of named models, for providers that
    /// report tokens but no cost.
    pub prices: HashMap<String, ProviderPrices>,
}

/// The prices of one provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderPrices {
    /// Any model not named below.
    pub default: Option<Price>,
    /// By model name.
    pub models: HashMap<String, Price>,
}

impl UsageSettings {
    /// The configured session budget of a provider's sessions.
    pub fn configured_session_budget(&self, provider: &str) -> Budget {
        match self.provider_budgets.get(provider) {
            Some(b) => self.session_budget.tightest(b),
            None => self.session_budget,
        }
    }

    /// The daily cap of an owner.
    pub fn owner_daily_budget(&self, owner: &str) -> Budget {
        self.owner_daily_by_owner
            .get(owner)
            .copied()
            .unwrap_or(self.owner_daily)
    }

    /// Fills in the cost of `usage` from the price table (the model's price, else the
    /// provider's default); meant for usage whose provider reported no cost.
    pub fn priced(&self, provider: &str, model: Option<&str>, mut usage: Usage) -> Usage {
        let Some(prices) = self.prices.get(provider) else {
            return usage;
        };
        let price = model
            .and_then(|m| prices.models.get(m))
            .or(prices.default.as_ref());
        if let Some(price) = price {
            usage.cost_usd = price.cost(&usage);
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_each_providers_names() {
        let claude = json!({"input_tokens": 3, "cache_read_input_tokens": 10,
                            "cache_creation_input_tokens": 5, "output_tokens": 7});
        assert_eq!(
            Usage::from_provider(Some(&claude), Some(0.5)),
            Some(Usage::new(18, 7, 10, 0.5))
        );
        let codex = json!({"input_tokens": 20, "cached_input_tokens": 4, "output_tokens": 6});
        assert_eq!(
            Usage::from_provider(Some(&codex), None),
            Some(Usage::new(20, 6, 4, 0.0))
        );
        let openai = json!({"prompt_tokens": 9, "completion_tokens": 2,
                            "prompt_tokens_details": {"cached_tokens": 1}});
        assert_eq!(
            Usage::from_provider(Some(&openai), None),
            Some(Usage::new(9, 2, 1, 0.0))
        );
        let gemini =
            json!({"total_tokens": 30, "input_tokens": 25, "output_tokens": 5, "cached": 2});
        assert_eq!(
            Usage::from_provider(Some(&gemini), None),
            Some(Usage::new(25, 5, 2, 0.0))
        );
        assert_eq!(Usage::from_provider(None, None), None);
    }

    #[test]
    fn prices_fill_in_a_missing_cost() {
        let price = Price {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
            cached_per_mtok: Some(0.3),
        };
        let usage = Usage::new(1_000_000, 100_000, 500_000, 0.0);
        assert!((price.cost(&usage) - (1.5 + 0.15 + 1.5)).abs() < 1e-9);
    }

    #[test]
    fn budgets_reach_and_pass() {
        let budget = Budget {
            max_cost_usd: Some(1.0),
            max_tokens: None,
        };
        let at = Usage::new(0, 0, 0, 1.0);
        assert!(budget.reached(&at, "session").is_some());
        assert!(budget.passed(&at, "session").is_none());
        let tight = budget.tightest(&Budget {
            max_cost_usd: Some(2.0),
            max_tokens: Some(10),
        });
        assert_eq!(tight.max_cost_usd, Some(1.0));
        assert_eq!(tight.max_tokens, Some(10));
        assert!(tight.covers(&Budget {
            max_cost_usd: Some(0.5),
            max_tokens: Some(10)
        }));
        assert!(!tight.covers(&Budget {
            max_cost_usd: Some(0.5),
            max_tokens: None
        }));
    }
}
