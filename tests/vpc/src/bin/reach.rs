//! `reach PROGRAM [--check CONTRACT]`: the reachability matrix of a Pulumi program, each path with
//! the rule that opens it or the reason it is closed — no root, no network, nothing deployed.
//! With `--check`, compares it with a committed contract and exits 1 naming every path that
//! opened or closed. Write a contract with `reach PROGRAM > CONTRACT`.

use std::process::ExitCode;

const USAGE: &str = "usage: reach PROGRAM [--check CONTRACT]\n\
     \x20 PROGRAM   a Pulumi.yaml (pulumi/Pulumi.yaml, pulumi/ecs-express/Pulumi.yaml)\n\
     \x20 --check   compare with CONTRACT (e.g. pulumi/reachability.txt); exit 1 on any change\n\
     Without --check the matrix is printed in the contract's format.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (program, contract) = match args.as_slice() {
        [help] if help == "--help" || help == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [program] if !program.starts_with('-') => (program, None),
        [program, flag, contract] if flag == "--check" => (program, Some(contract)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let topology = match vpc_twin::program::from_path(std::path::Path::new(program)) {
        Ok(topology) => topology,
        Err(error) => {
            eprintln!("reach: {program}: {error:#}");
            return ExitCode::from(2);
        }
    };
    let Some(contract) = contract else {
        println!(
            "# The network contract of {program}: every path, open or blocked, and after '#' what decides it.\n\
             # Written by `reach {program}`; tests/run and CI check it with `reach {program} --check`."
        );
        print!("{}", vpc_twin::reach::contract(&topology));
        return ExitCode::SUCCESS;
    };
    let committed = match std::fs::read_to_string(contract) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("reach: reading {contract}: {error}");
            return ExitCode::from(2);
        }
    };
    match vpc_twin::reach::contract_changes(&topology, &committed) {
        Ok(changes) if changes.is_empty() => {
            println!("reach: {program} keeps every path of {contract}");
            ExitCode::SUCCESS
        }
        Ok(changes) => {
            println!(
                "reach: {program} changes {} path(s) of {contract} — if intended, rewrite it with `reach {program} > {contract}` and let a reviewer read the diff:",
                changes.len()
            );
            for change in changes {
                println!("  {change}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("reach: {contract}: {error}");
            ExitCode::from(2)
        }
    }
}
