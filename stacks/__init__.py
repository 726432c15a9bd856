"""The CDK app's stacks and constructs. ``stacks.outputs`` imports no CDK, so the operator
scripts can share its names without installing aws-cdk-lib."""
