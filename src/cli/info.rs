//! `dis2 info`.

use anyhow::Result;
use clap::Args;

use super::DeviceArgs;

/// `dis2 info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub(crate) fn run(args: &InfoArgs) -> Result<()> {
    crate::info::print_info(args.device.device)
}
