//! `govbus-agency tail`: an agency's deliveries as JSON lines on standard output.
use std::io::Write;

use tokio_util::sync::CancellationToken;

use crate::{
    consume::{Handler, Seen, Verdict},
    decode::Received,
};

/// Prints each verified record once, as one JSON line; acks after the line is written.
pub struct Tail<W: Write> {
    out: W,
    seen: Seen,
    /// Records printed.
    pub printed: u64,
    /// Redeliveries skipped.
    pub skipped: u64,
}

impl<W: Write> Tail<W> {
    /// Prints to `out`, remembering the last million message ids.
    pub fn new(out: W) -> Self {
        Tail {
            out,
            seen: Seen::new(1_000_000),
            printed: 0,
            skipped: 0,
        }
    }
}

impl<W: Write> Handler for Tail<W> {
    async fn handle(
        &mut self,
        batch: &[Received],
        _stop: &CancellationToken,
    ) -> anyhow::Result<Vec<Verdict>> {
        for r in batch {
            if self.seen.first(&r.message_id) {
                serde_json::to_writer(&mut self.out, &r.envelope())?;
                self.out.write_all(b"\n")?;
                self.printed += 1;
            } else {
                self.skipped += 1;
            }
        }
        self.out.flush()?;
        Ok(batch.iter().map(|_| Verdict::Ack).collect())
    }
}
