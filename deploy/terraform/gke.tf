# GKE Standard, not Autopilot: the issue asks for a node pool sized for the
# fleet's maxima, and the chart's pods are few, large and steady (2-core auth,
# media and gateway pods); Standard lets us pick the machine, pack them and
# reason about capacity (below), and run the chart's log DaemonSet with its
# hostPath mount, which Autopilot refuses. Network policy enforcement comes
# from GKE Dataplane V2 (Cilium, ADVANCED_DATAPATH), always on with it: the
# chart's NetworkPolicies (default deny) depend on it.
#
# Node pool arithmetic (tests/deploy/test_terraform.py recomputes it from
# values.yaml + values-production.yaml and these locals):
#
#   CPU requests per pod (production): auth 2, posts 1, messages 0.5,
#   media 2, realtime 0.5 = 6 cores for one pod of each service; gateway 2,
#   web 0.5.
#   At 50 pods of each (the roster's replicas.max, and 50 of the gateway and
#   web too, above their own maxima of 20 and 10):
#     CPU    = 50 x (6 + 2 + 0.5)                         = 425 cores
#     memory = 50 x (256+384+256+768+512 + 256 + 96) MiB  = 126,400 MiB
#
#   n2-standard-16: 16 vCPU, 64 GiB. GKE's reservations:
#     CPU    6 % of core 1 + 1 % of core 2 + 0.5 % of cores 3-4
#            + 0.25 % of cores 5-16 = 60 + 10 + 10 + 30 m = 110 m
#            -> allocatable 15,890 m
#     memory 25 % of 4 GiB + 20 % of 4 GiB + 10 % of 8 GiB + 6 % of 48 GiB
#            = 5,611 MiB, + 100 MiB eviction threshold
#            -> allocatable 59,824 MiB
#   Less the system DaemonSets on every node (Dataplane V2, logging and
#   metrics agents, CSI, Cloud DNS, the chart's Alloy): 1,000 m, 2,048 MiB
#     -> 14,890 m and 57,776 MiB for the fleet's pods per node.
#
#   CPU binds: 425,000 / 14,890 = 28.5 -> 29 nodes; memory needs 2.2.
#   36 nodes (12 per zone) = 536,040 m: 26 % above the need, for the
#   fragmentation of 2-core pods on 14.9-core nodes and a rollout's surge.
locals {
  node_machine_type = "n2-standard-16"

  node_allocatable_cpu_millicores = 15890
  node_allocatable_memory_mib     = 59824
  node_system_cpu_millicores      = 1000
  node_system_memory_mib          = 2048

  node_pool_min_nodes = 3
}

# The nodes' own identity: logs, metrics, image pulls; nothing else (the
# pods use Workload Identity, never this account).
resource "google_service_account" "nodes" {
  account_id   = "${local.name}-nodes"
  display_name = "GKE nodes of ${local.name}"
  depends_on   = [google_project_service.apis]
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "main" {
  #checkov:skip=CKV_GCP_24:PodSecurityPolicy was removed from Kubernetes (1.25); the chart's pods run as non-root with a read-only root filesystem, enforce with Pod Security admission labels on the namespace
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Workspace domain this module cannot assume; RBAC binds IAM principals
  #checkov:skip=CKV_GCP_66:Binary Authorization is on (PROJECT_SINGLETON_POLICY_ENFORCE) but the policy itself, attestors included, belongs to the CI that signs images, not to this module
  #checkov:skip=CKV_GCP_12:Network policy is enforced by Dataplane V2 (datapath_provider = ADVANCED_DATAPATH); the legacy Calico network_policy block conflicts with it
  name     = local.name
  location = var.region

  network    = google_compute_network.main.id
  subnetwork = google_compute_subnetwork.nodes.id

  # The pools are managed below; the default one is removed at creation.
  remove_default_node_pool = true
  initial_node_count       = 1

  deletion_protection = true

  networking_mode = "VPC_NATIVE"
  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = true
    master_ipv4_cidr_block  = var.master_cidr
  }

  # The IP endpoint is private; the release workflows (on GitHub's runners)
  # and operators outside the VPC use the DNS endpoint instead, served by
  # Google's front end, which admits IAM-authenticated callers only: no
  # network path into the VPC, no authorized CIDR to keep up to date.
  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = true
    }
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        display_name = cidr_blocks.key
        cidr_block   = cidr_blocks.value
      }
    }
  }

  release_channel {
    channel = "REGULAR"
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  datapath_provider           = "ADVANCED_DATAPATH"
  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  enable_legacy_abac          = false

  dns_config {
    cluster_dns       = "CLOUD_DNS"
    cluster_dns_scope = "CLUSTER_SCOPE"
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  # The default pool's config, for the moment it exists.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    metadata = {
      disable-legacy-endpoints = "true"
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  resource_labels = local.labels

  depends_on = [google_project_service.apis]

  lifecycle {
    ignore_changes = [node_config]
  }
}

resource "google_container_node_pool" "fleet" {
  name     = "fleet"
  cluster  = google_container_cluster.main.id
  location = var.region

  autoscaling {
    # Totals over the region's zones (not per zone).
    total_min_node_count = local.node_pool_min_nodes
    total_max_node_count = var.node_pool_max_nodes
    location_policy      = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type    = local.node_machine_type
    image_type      = "COS_CONTAINERD"
    disk_type       = "pd-balanced"
    disk_size_gb    = 100
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = local.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}
