variable "project_id" {
  description = "The Google Cloud project of this environment."
  type        = string
}

variable "region" {
  description = "The region of everything (a regional GKE cluster, Cloud SQL HA, Memorystore HA, the bucket)."
  type        = string
}

variable "environment" {
  description = "The environment's name (prod, staging): a suffix of every resource name."
  type        = string
}

variable "subnet_cidr" {
  description = "The nodes' range."
  type        = string
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  description = "The pods' secondary range: a /14 gives 1,024 nodes x 110 pods."
  type        = string
  default     = "10.16.0.0/14"
}

variable "services_cidr" {
  description = "The Services' secondary range."
  type        = string
  default     = "10.20.0.0/20"
}

variable "master_cidr" {
  description = "The control plane's private /28."
  type        = string
  default     = "172.16.0.0/28"
}

variable "master_authorized_cidrs" {
  description = "Who may reach the control plane's endpoint (a bastion, the CI's egress, a VPN)."
  type        = map(string)
  default     = {}
}

variable "node_pool_max_nodes" {
  description = "The node pool's total maximum over the region's zones (see gke.tf for the arithmetic)."
  type        = number
  default     = 36
}

variable "database_tier" {
  description = "Cloud SQL's machine: 8 vCPU, 32 GiB holds the 1,500 connections of database.tf."
  type        = string
  default     = "db-custom-8-32768"
}

variable "redis_mode" {
  description = "Which Redis (redis.tf): \"instance\", Memorystore for Redis (one primary and its replica), or \"cluster\", Memorystore for Redis Cluster (redis_shard_count primaries, a replica each)."
  type        = string
  default     = "instance"

  validation {
    condition     = contains(["instance", "cluster"], var.redis_mode)
    error_message = "redis_mode is \"instance\" or \"cluster\"."
  }
}

variable "redis_memory_size_gb" {
  description = "Memorystore for Redis's capacity (redis_mode \"instance\")."
  type        = number
  default     = 5
}

variable "redis_shard_count" {
  description = "Memorystore for Redis Cluster's primaries (redis_mode \"cluster\"): the count docs/capacity.md gives."
  type        = number
  default     = 3

  validation {
    condition     = var.redis_shard_count >= 1 && floor(var.redis_shard_count) == var.redis_shard_count
    error_message = "redis_shard_count is a whole number of 1 or more."
  }
}

variable "media_public_base_url" {
  description = "Where clients fetch the images (objects.publicBaseUrl): the CDN or domain in front of the bucket, which stays private."
  type        = string
}

variable "github_repository" {
  description = "The GitHub repository (owner/name) whose release workflows deploy to this environment, through Workload Identity Federation (ci.tf)."
  type        = string
}

variable "github_environment" {
  description = "The GitHub environment whose deploy jobs act here (staging, production): the only ones that get a token (ci.tf)."
  type        = string
}
