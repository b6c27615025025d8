//! `local-stack --vpc`: the whole system in the VPC twin for a person (root only).
//! See `vpc_twin::stack`.

fn main() -> std::process::ExitCode {
    match vpc_twin::stack::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vpc-stack: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
