//! The turn queue of one session: queued turns in run order. Persisted through the turns' `order`.

use crate::ids::TurnId;
use crate::record::{TurnRecord, TurnView};

/// Queued turns of a session, in the order they will run. Invariant: sorted by `order`, which is
/// unique within the session; the running turn is not in it.
#[derive(Default, Debug)]
pub struct TurnQueue {
    turns: Vec<TurnRecord>,
}

impl TurnQueue {
    /// A queue of `turns` (any order).
    pub fn from_turns(mut turns: Vec<TurnRecord>) -> Self {
        turns.sort_by_key(|t| t.order);
        TurnQueue { turns }
    }

    /// Queued turns.
    pub fn len(&self) -> usize {
        self.turns.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// The order value that puts a turn at the front.
    pub fn front_order(&self, running: Option<i64>) -> i64 {
        let min = self.turns.first().map(|t| t.order);
        min.into_iter().chain(running).min().map_or(0, |o| o - 1)
    }

    /// The order value that puts a turn at the back.
    pub fn back_order(&self, running: Option<i64>) -> i64 {
        let max = self.turns.last().map(|t| t.order);
        max.into_iter().chain(running).max().map_or(0, |o| o + 1)
    }

    /// Inserts a turn where its `order` says; returns its 1-based position.
    pub fn insert(&mut self, turn: TurnRecord) -> usize {
        let at = self.turns.partition_point(|t| t.order < turn.order);
        self.turns.insert(at, turn);
        at + 1
    }

    /// Takes the first turn.
    pub fn pop_front(&mut self) -> Option<TurnRecord> {
        (!self.turns.is_empty()).then(|| self.turns.remove(0))
    }

    /// Takes a turn out by id.
    pub fn remove(&mut self, id: TurnId) -> Option<TurnRecord> {
        let at = self.turns.iter().position(|t| t.id == id)?;
        Some(self.turns.remove(at))
    }

    /// The 1-based position of a turn.
    pub fn position(&self, id: TurnId) -> Option<usize> {
        self.turns.iter().position(|t| t.id == id).map(|p| p + 1)
    }

    /// Takes every turn out, in order.
    pub fn drain(&mut self) -> Vec<TurnRecord> {
        std::mem::take(&mut self.turns)
    }

    /// The queued turns in order.
    pub fn iter(&self) -> impl Iterator<Item = &TurnRecord> {
        self.turns.iter()
    }

    /// Views for `queue.updated` and turn lists.
    pub fn views(&self) -> Vec<TurnView> {
        self.turns
            .iter()
            .enumerate()
            .map(|(i, t)| TurnView::new(t, Some(i + 1)))
            .collect()
    }
}
