//! `d11-element --name LAB --node NODE`: one element of a running lab, as
//! the lab's supervisor starts it ([`d11_cli::element`]). It links only
//! what an element needs, so its process holds only those pages of
//! program text (docs/bgp.md § Figures).

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some((lab, node)) = d11_cli::element::args(std::env::args_os().skip(1)) else {
        eprintln!("usage: d11-element --name LAB --node NODE (the lab's supervisor starts it)");
        return ExitCode::from(2);
    };
    match d11_cli::element::run(&lab, &node) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("d11-element: {}", d11_cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
