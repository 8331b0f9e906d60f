//! `auth simulate`: the fleet's readings as NDJSON on stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use auth_ingest::{Simulated, Simulator};
use clap::Args;

#[derive(Args)]
pub struct SimulateArgs {
    /// Pipeline spec whose `simulator` section to use.
    #[arg(long, env = "AUTH_CONFIG")]
    config: Option<PathBuf>,
    /// How many readings to print.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Event time of the first heartbeat, UTC ms (default: the spec's `startMs`, else now).
    #[arg(long)]
    start_ms: Option<i64>,
}

pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let spec = crate::load_spec(args.config.as_deref())?;
    let start_ms = args.start_ms.or(spec.simulator.start_ms).unwrap_or_else(crate::up::now_ms);
    let mut simulator = Simulator::new(&spec.simulator, start_ms);
    let mut batch = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0;
    while printed < args.count {
        batch.clear();
        simulator.fill(&mut batch, (args.count - printed).min(4_096));
        for item in &batch {
            let line = match item {
                Simulated::Reading(reading) => reading.to_json(),
                Simulated::Garbage { utility, customer_id, bytes } => serde_json::json!({
                    "malformed": hex::encode(bytes), "utility": utility, "customerId": customer_id,
                }),
            };
            writeln!(out, "{line}").context("writing to stdout")?;
        }
        printed += batch.len();
    }
    out.flush().context("writing to stdout")
}

