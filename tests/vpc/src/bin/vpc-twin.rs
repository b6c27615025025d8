//! `local-stack --vpc`: the whole system in the VPC twin for a person (root only). The harness
//! cannot depend on this crate (it depends on the harness), so `local-stack --vpc` runs this
//! binary: `harness::binary("vpc-twin")` builds it like the services.
//! See `vpc_twin::stack`. `vpc-twin aurora COMMAND` acts on Aurora in the running twin
//! (`vpc_twin::control`).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("aurora") {
        return match vpc_twin::control::send(&args[1..]) {
            Ok(reply) => {
                println!("{reply}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("vpc-twin aurora: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match vpc_twin::stack::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vpc-twin: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
