# OCI images (docker-archive tarballs) of the two services.
#
# Each image holds the static binary, the CA bundle and nothing else: no shell, no libc, no /bin.
# It runs as nobody (65534:65534), listens on $PORT (8080) and is tagged with its own store hash,
# so the tag changes exactly when the content does. checks.images-contract verifies all of that.
{ pkgs, self, services }:
let
  inherit (pkgs) lib;

  workspace = lib.importTOML ../Cargo.toml;

  # OCI annotations, set only when known: the source from `repository` in [workspace.package] of
  # Cargo.toml, the revision from the flake's git revision when the tree is clean.
  labels = lib.filterAttrs (_: value: value != null) {
    "org.opencontainers.image.source" = workspace.workspace.package.repository or null;
    "org.opencontainers.image.revision" = self.rev or null;
  };

  caBundle = "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt";

  # mimalloc's options for the frontend (rust.nix links it in): give memory back to the system at
  # once and commit arena memory as it is used. With mimalloc's defaults the frontend's peak RSS
  # was 60 MiB under load and 367 MiB after 64 concurrent private-service calls; with these, 22
  # and 61 MiB (tests/bench/RESULTS.md; why mimalloc at all: crates/frontend/src/main.rs).
  mimallocEnv = [
    "MIMALLOC_PURGE_DELAY=0"
    "MIMALLOC_ARENA_EAGER_COMMIT=0"
  ];

  image = name: service: extraEnv: pkgs.dockerTools.buildLayeredImage {
    inherit name;
    # No `tag`: dockerTools then uses the image's store hash (exposed as `imageTag`).
    # Everything below that names a store path (the binary, the CA bundle) is pulled into the image.
    config = {
      Entrypoint = [ (lib.getExe service) ];
      User = "65534:65534";
      ExposedPorts."8080/tcp" = { };
      Env = [
        "PORT=8080"
        "SSL_CERT_FILE=${caBundle}"
      ] ++ extraEnv;
      Labels = labels // {
        "org.opencontainers.image.title" = name;
        "org.opencontainers.image.version" = service.version;
      };
    };
  };

  frontend = image "frontend" services.frontend mimallocEnv;
  private-service = image "private-service" services.private-service [ ];
in
{
  inherit frontend private-service;

  # The Env entries each image must carry beyond PORT and SSL_CERT_FILE (checks.images-contract).
  extraEnv = {
    frontend = mimallocEnv;
    private-service = [ ];
  };

  # `nix build .#images` -> result/frontend.tar.gz and result/private-service.tar.gz; the Pulumi
  # program and apps.push-images read these two names.
  all = pkgs.linkFarm "images" [
    { name = "frontend.tar.gz"; path = frontend; }
    { name = "private-service.tar.gz"; path = private-service; }
  ];
}
