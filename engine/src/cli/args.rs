//! Argument groups shared by several subcommands.

use clap::Args;
use fhirlake_connectors::StoreOptions;

/// Flags every subcommand accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file with defaults for any flag (`lake = "..."`, `[ingest] max_rejects = 10`).
    /// Default: ./fhirlake.toml when it exists.
    #[arg(long, global = true, env = "FHIRLAKE_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// More log output on stderr (-v info, -vv debug). `FHIRLAKE_LOG` takes tracing filter syntax.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// No progress bar and no per-file log lines (rejected lines and warnings are still shown).
    #[arg(short, long, global = true, env = "FHIRLAKE_QUIET")]
    pub quiet: bool,
}

impl GlobalArgs {
    /// Logs go to stderr; never with resource content (the code logs positions and reasons only).
    pub fn init_logging(&self) {
        // Library crates (delta-rs, DataFusion) log routine conditions at warn; keep them quiet
        // unless asked.
        let default = match self.verbose {
            0 => "error,fhirlake=warn",
            1 => "warn,fhirlake=info",
            _ => "info,fhirlake=debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("FHIRLAKE_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .try_init();
    }
}

/// Where the lake is.
#[derive(Debug, Args, Clone)]
pub struct LakeArgs {
    /// Lake location: a directory, `file://` or `s3://bucket/prefix` URL.
    #[arg(
        long,
        env = "FHIRLAKE_LAKE",
        default_value = "./lake",
        value_name = "URL"
    )]
    pub lake: String,

    #[command(flatten)]
    pub storage: StorageArgs,
}

impl LakeArgs {
    /// Opens the lake location (no I/O).
    pub fn open(&self) -> anyhow::Result<fhirlake::lake::Lake> {
        Ok(fhirlake::lake::Lake::open(
            &self.lake,
            self.storage.options(),
        )?)
    }
}

/// Object-store settings.
#[derive(Debug, Args, Clone)]
pub struct StorageArgs {
    /// Object-store option KEY=VALUE (e.g. `aws_endpoint=http://127.0.0.1:9000`,
    /// `aws_allow_http=true`); repeatable. AWS_* environment variables are read too.
    #[arg(
        long = "storage-option",
        env = "FHIRLAKE_STORAGE_OPTIONS",
        value_delimiter = ',',
        value_parser = parse_key_value,
        value_name = "KEY=VALUE"
    )]
    pub storage_options: Vec<(String, String)>,
}

impl StorageArgs {
    /// As connector options.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            options: self.storage_options.clone(),
        }
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    if key.trim().is_empty() {
        return Err(format!("`{s}` has an empty key"));
    }
    Ok((key.trim().to_string(), value.to_string()))
}
