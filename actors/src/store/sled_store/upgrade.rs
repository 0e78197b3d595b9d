//! Upgrading an older sled store on open.

use super::layout::*;
use super::SledEngine;
use crate::event::Event;
use crate::store::StoreError;

impl SledEngine {
    /// Schema 1 → 2: events move from `troupe` to `events` as blocks of one, a chunk at a time; each chunk is
    /// written to `events` and flushed before it leaves `troupe`, so a crash midway loses none.
    pub(super) fn move_events_to_their_tree(&self) -> Result<(), StoreError> {
        const CHUNK: usize = 10_000;
        loop {
            let mut moved = sled::Batch::default();
            let mut gone = sled::Batch::default();
            let mut n = 0;
            for kv in self.tree.scan_prefix([b'e']).take(CHUNK) {
                let (k, v) = kv.map_err(engine_err)?;
                let event: Event = decode(&v)?;
                let mut block = event.seq.to_be_bytes().to_vec();
                block.push(b'[');
                block.extend_from_slice(&v);
                block.push(b']');
                moved.insert(k.clone(), block);
                gone.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(());
            }
            self.events.apply_batch(moved).map_err(engine_err)?;
            self.db.flush().map_err(engine_err)?;
            self.tree.apply_batch(gone).map_err(engine_err)?;
        }
    }
}
