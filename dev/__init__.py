"""Development tooling: embedded PostgreSQL/Redis (`dev.embedded`), the demo (`dev.demo`) and
`without-network.sh`. Nothing a deployment runs imports it."""
