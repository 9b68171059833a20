"""The evaluate stage: attacks and audits run against every model before it can ship."""
