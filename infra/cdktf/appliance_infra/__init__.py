"""CDK Terrain (cdktn) stacks that deploy the mirror appliance fleet on AWS and GCP.

Modules:
  config     typed, validated inputs (pydantic) and where they come from (file, env, context)
  user_data  the boot script that configures the appliance on an instance (both clouds)
  aws_stack  NLB + autoscaling group + VPC Traffic Mirroring target/filter/sessions
  gcp_stack  internal passthrough LB collector + regional MIG + Packet Mirroring policy
  app        builds the stacks for a list of configurations

Importing a provider package takes seconds, so ``config`` and ``user_data`` never import one
and ``app`` imports a stack module only when a configuration for that cloud is present.
"""

HEALTH_PORT = 8000
HEALTH_PATH = "/healthz"
VXLAN_PORT = 4789

# Terraform / OpenTofu releases the synthesized configuration is written for. Mirrors
# "targetVersions" in cdktf.json (the CLI passes it as context); S3 native state locking
# (use_lockfile) needs 1.10.
TARGET_VERSIONS_CONTEXT_KEY = "targetVersions"
TARGET_VERSIONS = {"terraform": ">=1.10.0", "opentofu": ">=1.10.0"}
