"""What the operator scripts, the tests and the benchmarks share: a local PostgreSQL, the service
served in-process, a Lambda context stand-in, moto's Secrets Manager set up as the stacks do,
free ports. It imports the service package; nothing in the service imports it."""
