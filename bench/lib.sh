# shellcheck shell=bash
# Helpers shared by bench/fanin.sh and bench/renew.sh (sourced, not run).

# Writes HOME/.qsh/config.json (0600, in a 0700 .qsh) with one device-code context `lab` at
# ISSUER: what tests/idp's `qlam-cli` client and the benchmarks' logins expect.
write_lab_config() { # HOME ISSUER
  mkdir -p "$1/.qsh"
  chmod 700 "$1/.qsh"
  cat > "$1/.qsh/config.json" <<EOF
{"current_context": "lab", "contexts": [{"name": "lab", "qpu": "test",
  "defaults": {"auth_provider": "testidp"},
  "auth_providers": [{"provider": "oauth", "name": "testidp", "auth_base_url": "$2",
    "client_id": "qlam-cli", "client_secret": null, "grant_type": "device_code",
    "scope": null, "audience": null, "tenant": "test"}]}]}
EOF
  chmod 600 "$1/.qsh/config.json"
}
