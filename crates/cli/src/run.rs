//! `d11 run --name LAB --node NODE`: a host's app (`apps.rs`), which the
//! supervisor starts for each host with an app. An element node runs
//! [`d11_cli::element`], the same as the `d11-element` program the
//! supervisor starts for it.

use anyhow::{Context, Result};
use d11_lab::RunDir;

pub fn run(lab: &str, node: &str) -> Result<()> {
    let topo = RunDir::new(lab)
        .topology()
        .context("reading the lab's topology")?;
    let Some(app) = topo.app(node) else {
        if topo.element(node).is_some() {
            return d11_cli::element::run(lab, node);
        }
        anyhow::bail!("{node} is neither an element nor a host with an app in lab {lab}");
    };
    d11_cli::init_tracing();
    let span = tracing::info_span!("node", name = node, app = app.app.as_str());
    let _enter = span.enter();
    crate::apps::run(lab, &app)
}
