"""The environment report: collect() builds data, render formats it, cli.main() is sftrl-doctor."""
