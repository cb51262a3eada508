# Redis, one of two kinds (var.redis_mode), each with a replica of every
# primary in another zone (the chart's redis.waitReplicas, 1, waits for it):
# exactly one of the two resources below exists, and secrets.tf writes the
# URL of whichever it is.
locals {
  redis_replicas = 1
  # Either kind's weekly maintenance (UTC): Sunday, 04:00.
  redis_maintenance = { day = "SUNDAY", hour = 4 }
}

# "instance": Memorystore for Redis, standard tier (a replica in another
# zone, automatic failover), AUTH, in-transit encryption (TLS on port 6378:
# the chart's NetworkPolicy lets 6378 out), reached through private service
# access.
resource "google_redis_instance" "main" {
  count                   = var.redis_mode == "instance" ? 1 : 0
  name                    = "${local.name}-redis"
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.redis_memory_size_gb
  region                  = var.region
  redis_version           = "REDIS_7_2"
  authorized_network      = google_compute_network.main.id
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  replica_count           = local.redis_replicas
  read_replicas_mode      = "READ_REPLICAS_DISABLED"
  labels                  = local.labels

  maintenance_policy {
    weekly_maintenance_window {
      day = local.redis_maintenance.day
      start_time {
        hours   = local.redis_maintenance.hour
        minutes = 0
      }
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

# "cluster": Memorystore for Redis Cluster, var.redis_shard_count primaries
# with a replica each, spread over the region's zones, TLS (server
# authentication). Nodes of 2 vCPUs and 6.5 GB (REDIS_STANDARD_SMALL): the
# capacity model (docs/capacity.md) gives each primary 0.8 of a core of
# commands, and the shard count follows from it. Its clients reach it
# through Private Service Connect: a discovery endpoint on 6379 and the
# nodes on 11000-13047, at addresses the connection policy below takes from
# the nodes' subnet (the chart's NetworkPolicy lets those ports out to the
# private ranges).
#
# No AUTH: Memorystore for Redis Cluster has no password, only IAM
# authentication (AUTH_MODE_IAM_AUTH) or none. IAM authentication takes a
# short-lived access token as the password, renewed within the hour on every
# connection, which the fleet's client (redis-py with a fixed URL from a
# Secret) does not do. So access is the network's: the cluster has no
# address outside the VPC, and in the chart's namespace only the service
# pods' NetworkPolicies let Redis's ports out.
resource "google_redis_cluster" "main" {
  count                       = var.redis_mode == "cluster" ? 1 : 0
  name                        = "${local.name}-redis"
  region                      = var.region
  shard_count                 = var.redis_shard_count
  replica_count               = local.redis_replicas
  node_type                   = "REDIS_STANDARD_SMALL"
  authorization_mode          = "AUTH_MODE_DISABLED"
  transit_encryption_mode     = "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
  deletion_protection_enabled = true

  psc_configs {
    network = google_compute_network.main.id
  }

  zone_distribution_config {
    mode = "MULTI_ZONE"
  }

  # A snapshot every hour: after losing a shard's primary and replica at
  # once, its streams come back with at most the last hour missing, where
  # without it they would be empty (what Redis took has left the outboxes).
  persistence_config {
    mode = "RDB"
    rdb_config {
      rdb_snapshot_period = "ONE_HOUR"
    }
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = local.redis_maintenance.day
      start_time {
        hours   = local.redis_maintenance.hour
        minutes = 0
      }
    }
  }

  depends_on = [google_network_connectivity_service_connection_policy.redis]
}

# What lets Memorystore make the cluster's Private Service Connect endpoints
# in this network, with addresses from the nodes' subnet.
resource "google_network_connectivity_service_connection_policy" "redis" {
  count         = var.redis_mode == "cluster" ? 1 : 0
  name          = "${local.name}-redis"
  location      = var.region
  service_class = "gcp-memorystore-redis"
  network       = google_compute_network.main.id
  labels        = local.labels

  psc_config {
    subnetworks = [google_compute_subnetwork.nodes.id]
  }

  depends_on = [google_project_service.apis]
}
