"""Job kinds: what each family declares (`attribution`, `trust`, `making`, `dataset`, `atlas`), collected by
`registry`; `kind` says what a kind is, `params` what every kind's params share."""
