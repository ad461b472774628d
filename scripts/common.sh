# Shared by scripts/test and scripts/demo (sourced, not run): install what they need.

# Installs the given Debian packages when any is missing, saying so. The packages it installed are
# added to INSTALLED_NOW.
INSTALLED_NOW=()
ensure_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then
      echo "error: installing packages needs root; run as root or: apt-get install ${missing[*]}" >&2
      exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    INSTALLED_NOW+=("${missing[@]}")
  fi
}

# Makes sure a Rust toolchain of 1.85 or later (edition 2024) with clippy and rustfmt is on PATH.
ensure_rust() {
  # shellcheck disable=SC1091
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  if ! command -v cargo >/dev/null 2>&1; then
    echo "Installing the Rust toolchain with rustup (Debian's rustc is too old for galera-lb)" >&2
    ensure_packages curl ca-certificates build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --profile minimal --component clippy,rustfmt >&2
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
}

# Debian's mariadb-server package starts a plain (non-Galera) server on 3306 where systemd runs.
# When this run installed the package just for the sandbox, that server is stopped and disabled.
quiet_distribution_mariadb() {
  local pkg
  for pkg in "${INSTALLED_NOW[@]}"; do
    if [ "$pkg" = mariadb-server ] && command -v systemctl >/dev/null 2>&1 \
        && systemctl is-active --quiet mariadb 2>/dev/null; then
      echo "Stopping and disabling the mariadb service that the mariadb-server package just" \
           "started on 3306 (galera-lb's demo listens there; 'systemctl enable --now mariadb'" \
           "brings it back)" >&2
      systemctl disable --now mariadb >&2 || true
    fi
  done
}

# Makes sure cargo-deb (which builds the Debian package) is installed.
ensure_cargo_deb() {
  if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "Installing cargo-deb (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked >&2
  fi
}

# Makes sure mdbook (which builds the book in docs/) is installed, as cargo-deb is: from
# crates.io with the versions of its lock file.
ensure_mdbook() {
  if ! command -v mdbook >/dev/null 2>&1; then
    echo "Installing mdbook (cargo install mdbook --locked)" >&2
    cargo install mdbook --locked >&2
  fi
}
