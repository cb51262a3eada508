# Memorystore for Redis: standard tier (a replica in another zone, automatic
# failover), AUTH, in-transit encryption (TLS on port 6378: the chart's
# NetworkPolicy lets 6378 out), reached through private service access.
resource "google_redis_instance" "main" {
  name                    = "${local.name}-redis"
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.redis_memory_size_gb
  region                  = var.region
  redis_version           = "REDIS_7_2"
  authorized_network      = google_compute_network.main.id
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  replica_count           = 1
  read_replicas_mode      = "READ_REPLICAS_DISABLED"
  labels                  = local.labels

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 4
        minutes = 0
      }
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}
