terraform {
  required_version = ">= 1.6, < 2.0"

  # google 6.40 is the first whose google_redis_cluster exports
  # managed_server_ca, the cluster's CA that secrets.tf hands the pods;
  # google-beta moves with it.
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.40"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.40"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # Partial configuration: the state bucket is given at init (README.md),
  #   terraform init -backend-config="bucket=<state bucket>" -backend-config="prefix=social/prod"
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
