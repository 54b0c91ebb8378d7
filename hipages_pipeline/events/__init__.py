"""Event semantics of the data contract (shared/spec/data_contract.md), independent of Dagster."""
