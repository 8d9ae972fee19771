//! `fhirlake deid purge`: re-applies a fixed policy to the lake and removes the older Delta
//! versions, so that a value an earlier policy let through is gone from every file
//! (`fhirlake::lake::purge` does the work; this module owns the flags and the summary).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use fhirlake::lake::purge::{Purge, PurgeReport};
use fhirlake_deid::Policy;

use super::args::LakeArgs;

/// `fhirlake deid purge` flags.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub lake: LakeArgs,

    /// The fixed policy to re-apply: a built-in profile, a TOML policy file or a Microsoft
    /// anonymizer configuration. Required: a purge removes whatever this policy does not keep, and
    /// the history that held the old values, irreversibly.
    #[arg(long, env = "FHIRLAKE_POLICY", value_name = "P")]
    pub policy: Option<String>,

    /// Only these resource types (repeatable or comma-separated, e.g. `--type Patient,Observation`);
    /// default: every raw table. The views over them are refreshed and purged too.
    #[arg(long = "type", value_delimiter = ',', value_name = "TYPE")]
    pub types: Vec<String>,

    /// Count what would change; write and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `fhirlake deid purge`.
pub async fn run(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let policy_arg = args.policy.as_deref().context(
        "--policy is required: name the fixed policy to re-apply (a purge removes what it does \
         not keep, and the older versions of the tables, for good)",
    )?;
    let policy = Policy::load(policy_arg)?;
    let lake = args.lake.open()?;
    let report = Purge::new(lake, policy)?
        .with_types(args.types)
        .with_dry_run(args.dry_run)
        .run()
        .await?;
    print_report(&report)?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &PurgeReport) -> anyhow::Result<()> {
    let would = if report.dry_run { "would be " } else { "" };
    for table in &report.tables {
        outln!(
            "{}: {} rows read, {} {would}rewritten, {} {would}removed by the policy",
            table.table,
            table.rows,
            table.rewritten,
            table.removed
        );
    }
    if report.dry_run {
        outln!(
            "dry run with policy {} ({}): nothing was written or deleted",
            report.policy_name,
            report.policy_hash
        );
        return Ok(());
    }
    for (view, outcome) in &report.views {
        if outcome.resources > 0 {
            outln!(
                "{view}: rows of {} resources replaced ({} rows)",
                outcome.resources,
                outcome.rows
            );
        }
    }
    for history in &report.history {
        outln!(
            "{}: history removed, only version {} is left ({} data files and {} log files deleted)",
            history.table,
            history.version,
            history.files_deleted,
            history.log_files_deleted
        );
    }
    let rewritten: u64 = report.tables.iter().map(|t| t.rewritten).sum();
    let removed: u64 = report.tables.iter().map(|t| t.removed).sum();
    outln!(
        "purged with policy {} ({}): {rewritten} rows rewritten, {removed} removed; run {} in lake.runs",
        report.policy_name,
        report.policy_hash,
        report.run_id
    );
    Ok(())
}
