//! The arguments every pipeline subcommand shares.

use std::path::PathBuf;

use auth_core::PipelineSpec;
use clap::Args;

/// The spec file, the pipeline's name and the servers that override the spec's.
#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Pipeline spec (YAML); every field has a default (`auth spec` prints them).
    #[arg(long, env = "AUTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Pipeline name: topics `<pipeline>.<utility>`, groups `<pipeline>.stream|archive`, Redis keys `auth:<pipeline>:`.
    #[arg(long, env = "AUTH_PIPELINE", default_value = "auth")]
    pub pipeline: String,
    /// Kafka to use instead of the spec's `log.url`, `kafka://host:port[,host:port]`.
    #[arg(long, env = "AUTH_KAFKA_URL")]
    pub kafka_url: Option<String>,
    /// Redis to use instead of the spec's `serving.url`, `redis://host:port[/db]`.
    #[arg(long, env = "AUTH_REDIS_URL")]
    pub redis_url: Option<String>,
}

impl CommonArgs {
    /// The spec file (or the defaults) with the server URLs applied, checked.
    pub fn spec(&self) -> anyhow::Result<PipelineSpec> {
        let spec = load_spec(self.config.as_deref())?;
        auth_adapters::with_servers(spec, self.kafka_url.as_deref(), self.redis_url.as_deref())
            .map_err(|problems| anyhow::anyhow!("invalid settings:\n{problems}"))
    }
}

/// Loads the spec at `path`, or the defaults when there is none.
pub fn load_spec(path: Option<&std::path::Path>) -> anyhow::Result<PipelineSpec> {
    match path {
        Some(path) => Ok(PipelineSpec::load(path)?),
        None => Ok(PipelineSpec::default()),
    }
}

/// Every problem of a spec whose fields the flags changed, or none.
pub fn check(spec: &PipelineSpec) -> anyhow::Result<()> {
    let problems = spec.problems();
    anyhow::ensure!(
        problems.is_empty(),
        "invalid settings:\n{}",
        problems.iter().map(|problem| format!("  - {problem}")).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}
