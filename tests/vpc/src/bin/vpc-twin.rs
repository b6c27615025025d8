//! `local-stack --vpc`: the whole system in the VPC twin for a person (root only). The harness
//! cannot depend on this crate (it depends on the harness), so `local-stack --vpc` runs this
//! binary: `harness::binary("vpc-twin")` builds it like the services.
//! See `vpc_twin::stack`.

fn main() -> std::process::ExitCode {
    match vpc_twin::stack::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vpc-twin: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
