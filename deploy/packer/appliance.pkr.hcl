# Machine images of the mirror appliance: an AMI (AWS) and a GCE image (GCP), both from
# Debian 12 (bookworm, Python 3.11). Each boots straight into `appliance boot`, which reads the
# instance's metadata and starts the runtime (deploy/README.md).
#
#   python -m pip wheel --no-deps . -w dist          # the wheel, from the repository root
#   packer init deploy/packer
#   packer build -var wheel=dist/mirror_appliance-0.1.0-py3-none-any.whl \
#     -var gcp_project_id=my-project deploy/packer            # both images
#   packer build -only='*.amazon-ebs.debian' -var wheel=... deploy/packer   # the AMI only
#
# Credentials come from the usual chains (AWS_PROFILE / instance role; gcloud application
# default credentials). Builders run in the given (or default) VPC/subnet with SSH from the
# machine running Packer.

packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1.3"
    }
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = "~> 1.1"
    }
  }
}

variable "wheel" {
  type        = string
  description = "Path of the mirror_appliance wheel to install (python -m pip wheel --no-deps . -w dist)."
  validation {
    condition     = can(regex("mirror_appliance-[^/]+\\.whl$", var.wheel))
    error_message = "The wheel must be a mirror_appliance-*.whl file."
  }
}

variable "version" {
  type        = string
  default     = "0.1.0"
  description = "Appliance version, used in image names and tags."
}

variable "aws_region" {
  type    = string
  default = "us-east-1"
}

variable "aws_instance_type" {
  type    = string
  default = "c6i.large"
}

variable "aws_subnet_id" {
  type        = string
  default     = null
  description = "Subnet of the build instance (default: the default VPC)."
}

variable "aws_ami_regions" {
  type        = list(string)
  default     = []
  description = "Other regions to copy the AMI to."
}

variable "aws_kms_key_id" {
  type        = string
  default     = null
  description = "KMS key for the AMI's encrypted snapshot (default: the AWS-managed EBS key)."
}

variable "gcp_project_id" {
  type        = string
  default     = null
  description = "Project that builds and owns the GCE image (required for the googlecompute build)."
}

variable "gcp_zone" {
  type    = string
  default = "us-central1-a"
}

variable "gcp_subnetwork" {
  type        = string
  default     = null
  description = "Subnetwork of the build instance (default: the project's default network)."
}

locals {
  stamp   = formatdate("YYYYMMDDhhmmss", timestamp())
  name    = "mirror-appliance-${replace(var.version, ".", "-")}-${local.stamp}"
  stage   = "/tmp/appliance"
  systemd = "${path.root}/../systemd"
}

# Debian's official AMIs are published by account 136693071363 (https://wiki.debian.org/Cloud/AmazonEC2Image).
source "amazon-ebs" "debian" {
  region        = var.aws_region
  instance_type = var.aws_instance_type
  subnet_id     = var.aws_subnet_id
  ssh_username  = "admin"

  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"]
    most_recent = true
  }

  ami_name        = local.name
  ami_description = "Mirror appliance ${var.version} (Debian 12): VXLAN traffic mirroring target"
  ami_regions     = var.aws_ami_regions
  encrypt_boot    = true
  kms_key_id      = var.aws_kms_key_id
  imds_support    = "v2.0"
  ena_support     = true

  # the build instance itself: IMDSv2 only
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = {
    Name        = local.name
    application = "mirror-appliance"
    version     = var.version
    base        = "{{ .SourceAMIName }}"
  }
}

source "googlecompute" "debian" {
  project_id              = var.gcp_project_id
  zone                    = var.gcp_zone
  subnetwork              = var.gcp_subnetwork
  machine_type            = "e2-standard-2"
  source_image_family     = "debian-12"
  source_image_project_id = ["debian-cloud"]
  ssh_username            = "packer"
  disk_size               = 20
  disk_type               = "pd-balanced"

  image_name        = local.name
  image_family      = "mirror-appliance"
  image_description = "Mirror appliance ${var.version} (Debian 12): Packet Mirroring collector"
  image_labels = {
    application = "mirror-appliance"
    version     = replace(var.version, ".", "-")
  }
  # instances of the image can run as Shielded VMs (the infra/cdktf template turns it on)
  enable_secure_boot          = true
  enable_vtpm                 = true
  enable_integrity_monitoring = true
  image_guest_os_features     = ["UEFI_COMPATIBLE", "VIRTIO_SCSI_MULTIQUEUE", "GVNIC"]
}

build {
  name    = "mirror-appliance"
  sources = ["source.amazon-ebs.debian", "source.googlecompute.debian"]

  provisioner "shell" {
    inline = ["mkdir -p ${local.stage}"]
  }

  provisioner "file" {
    sources = [
      var.wheel,
      "${local.systemd}/appliance.service",
      "${local.systemd}/appliance.service.d/gcp-capture.conf",
    ]
    destination = "${local.stage}/"
  }

  provisioner "shell" {
    script           = "${path.root}/install.sh"
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "APPLIANCE_CLOUD=${source.type == "amazon-ebs" ? "aws" : "gcp"}",
      "APPLIANCE_STAGE=${local.stage}",
    ]
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
    custom_data = {
      version = var.version
    }
  }
}
