//! `auth`: every role of AUTH in one binary.
// The CLI is where output for people is printed.
#![allow(clippy::print_stdout)]

mod api;
mod archive;
mod backfill;
mod batch;
mod common;
mod ingest;
mod operator;
mod registry;
mod simulate;
mod stream;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auth_runtime::telemetry;
use clap::{Parser, Subcommand};

/// mimalloc: the API's request path and the batch allocate many small,
/// short-lived buffers; glibc's allocator took a fifth of the API's CPU time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "auth", version, about = "AUTH - Analytics of Utility Things")]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `auth_stream=debug`.
    #[arg(long, env = "AUTH_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole pipeline in one process on embedded adapters and serves the dashboard.
    Up(up::UpArgs),
    /// Simulates the fleet: NDJSON on stdout (the edge format), readings into Kafka, or through the gateway.
    Simulate(simulate::SimulateArgs),
    /// Runs the ingest gateway: HTTP `POST /api/v1/readings` (and MQTT) -> validation -> Kafka.
    Ingest(ingest::IngestArgs),
    /// Issues, lists and revokes gateway keys.
    Keys(ingest::KeysArgs),
    /// Runs one stream processor: Kafka -> event-time windows -> Redis, with checkpoints.
    Stream(stream::StreamArgs),
    /// Runs one archiver: Kafka -> Parquet master data (a directory or S3), offsets committed after each upload.
    Archive(archive::ArchiveArgs),
    /// Serves the HTTP API and dashboard over Redis, Kafka and the results database.
    Api(api::ApiArgs),
    /// Adds and lists the accounts of the API and dashboard (in the results database).
    Users(api::UsersArgs),
    /// Imports and exports the meter registry (CSV or Parquet; in the results database).
    Registry(registry::RegistryArgs),
    /// Recomputes days from the master data into the results database; reconciles and restates the stream's totals.
    Batch(batch::BatchArgs),
    /// Checks a pipeline spec file, or prints the default spec.
    Spec {
        /// The spec to check; without it, the defaults are printed as YAML.
        file: Option<PathBuf>,
    },
    /// Runs the Kubernetes operator: reconciles every `UtilityPipeline` (leader-elected through a Lease).
    Operator(operator::OperatorArgs),
    /// Writes the `UtilityPipeline` custom resource definition (generated from the spec) to
    /// `crds/` and to the Helm chart's `crds/` (run it from the repository), or prints it.
    Crd {
        /// Print it instead.
        #[arg(long)]
        stdout: bool,
    },
}

/// Runs the subcommand. An error is printed as one message with its causes
/// and exits with 1; a backtrace only with `AUTH_BACKTRACE=1` (not with
/// `RUST_BACKTRACE`, which developers often set for other reasons).
fn main() -> ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if std::env::var_os("AUTH_BACKTRACE").is_some_and(|value| value == "1") => {
            eprintln!("Error: {err:?}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("Error: {}", user_message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by ": ". Our error types name their cause
/// in their own message (so that a logged error is whole), so a cause that
/// the message before it already ends with is not repeated.
fn user_message(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.last().is_some_and(|previous| previous.ends_with(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => {
            let metrics = telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(up::run(args, metrics))
        }
        Command::Simulate(args) if args.to_stdout() => simulate::to_stdout(&args),
        Command::Simulate(args) if args.backfill => {
            telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(simulate::backfill(args))
        }
        Command::Simulate(args) => {
            let metrics = telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(simulate::to_servers(args, metrics))
        }
        Command::Ingest(args) => {
            let metrics = telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(ingest::run(args, metrics))
        }
        Command::Keys(args) => ingest::keys(args),
        Command::Stream(args) => {
            let metrics = telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(stream::run(args, metrics))
        }
        Command::Archive(args) => {
            let metrics = telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(archive::run(args, metrics))
        }
        Command::Api(args) => {
            let metrics = telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(api::run(args, metrics))
        }
        Command::Users(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(api::users(args))
        }
        Command::Registry(args) => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(registry::run(args))
        }
        Command::Batch(args) => {
            telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(batch::run(args))
        }
        Command::Spec { file } => {
            let spec = common::load_spec(file.as_deref())?;
            match file {
                Some(path) => println!("{} is a valid pipeline spec", path.display()),
                None => print!("{}", serde_saphyr::to_string(&spec).context("rendering the default spec")?),
            }
            Ok(())
        }
        Command::Operator(args) => {
            let metrics = telemetry::init(&cli.log)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(operator::run(args, metrics))
        }
        Command::Crd { stdout } => {
            let yaml = auth_operator::crd::definition_yaml().context("rendering the custom resource definition")?;
            if stdout {
                print!("{yaml}");
                return Ok(());
            }
            for file in auth_operator::crd::CRD_FILES {
                let path = std::path::Path::new(file);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(path, &yaml).with_context(|| format!("writing {file}"))?;
                println!("wrote {file}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::user_message;

    /// An error whose message names its cause, as ours do.
    #[derive(Debug)]
    struct NamesItsCause(std::io::Error);

    impl std::fmt::Display for NamesItsCause {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "reading log: {}", self.0)
        }
    }

    impl std::error::Error for NamesItsCause {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let cause = std::io::Error::other("broker gone");
        let err = anyhow::Error::new(NamesItsCause(cause)).context("stream processor");
        assert_eq!(user_message(&err), "stream processor: reading log: broker gone");
    }

    #[test]
    fn a_cause_the_message_does_not_name_is_printed() {
        let err = anyhow::Error::new(std::io::Error::other("no such file")).context("reading spec.yaml");
        assert_eq!(user_message(&err), "reading spec.yaml: no such file");
    }
}
