# What the integration tests need at run time, from nixpkgs, shared by checks.nextest and the dev shell.
# tests/harness finds PostgreSQL through PG_BIN and moto through MOTO_SERVER.
{ pkgs }:
let
  moto = pkgs.python3.withPackages (ps: [ ps.moto ] ++ ps.moto.optional-dependencies.server);
in
{
  packages = [ pkgs.postgresql moto ];
  env = {
    PG_BIN = "${pkgs.postgresql}/bin";
    MOTO_SERVER = "${moto}/bin/moto_server";
    # The AWS SDK (rustls with native roots) loads this bundle even when it talks plain HTTP to moto.
    SSL_CERT_FILE = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";
  };
}
