# Cloud SQL for PostgreSQL 16: regional (a standby in another zone, automatic
# failover), private IP only (private service access, network.tf), TLS only,
# backups with point-in-time recovery, deletion protection at both levels.
#
# Connections, computed below from the roster and the chart (and recomputed
# by tests/deploy/test_terraform.py):
#   database services (fleet.yaml, database: true) = auth, posts, messages, media = 4
#   pods of each at the HPA's maximum (fleet.yaml replicas.max) = 50
#   pool per pod (values-production.yaml serviceDefaults.databasePool.max, DB_POOL_MAX) = 6
#   4 x 50 x 6 = 1,200 connections at the fleet's maximum
#   + the migration Jobs (one each at an upgrade), Cloud SQL's own and the
#     superuser reserve: a few dozen
#   max_connections = 1,500: 25 % above 1,200 (a plan fails below 20 %).
# The sum fits one PostgreSQL of 32 GiB (~1,200 backends at a few MiB each
# beside shared_buffers), so no pooler: the services' own pools are the
# pooling. Should the pools or the pod counts grow past ~2,500 connections,
# put PgBouncer (transaction mode) in front, or move to Enterprise Plus and
# its managed connection pooling, rather than raise max_connections further.
locals {
  database_pool_max = local.production_values.serviceDefaults.databasePool.max
  database_max_clients = sum([
    for name in local.database_services :
    local.roster.services[name].replicas.max * local.database_pool_max
  ])
  database_max_connections = 1500
}

resource "google_sql_database_instance" "main" {
  #checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY refuses every connection without TLS; client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) would need the Cloud SQL Auth Proxy, which the services do not use
  #checkov:skip=CKV_GCP_79:PostgreSQL 16 is the version the issue and the services' migrations target; a major upgrade is its own change
  #checkov:skip=CKV2_GCP_13:log_duration logs every statement's duration, at 16,000+ requests/s far too much; Query Insights records latencies instead
  name                = "${local.name}-pg"
  database_version    = "POSTGRES_16"
  region              = var.region
  deletion_protection = true

  settings {
    edition                     = "ENTERPRISE"
    tier                        = var.database_tier
    availability_type           = "REGIONAL"
    disk_type                   = "PD_SSD"
    disk_autoresize             = true
    deletion_protection_enabled = true
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.main.id
      ssl_mode                                      = "ENCRYPTED_ONLY"
      enable_private_path_for_google_cloud_services = true
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = 14
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = true
      record_client_address   = true
    }

    database_flags {
      name  = "max_connections"
      value = tostring(local.database_max_connections)
    }
    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }

  depends_on = [google_service_networking_connection.private_services]

  lifecycle {
    precondition {
      condition     = local.database_max_connections >= 1.2 * local.database_max_clients
      error_message = "max_connections (${local.database_max_connections}) is under 1.2 x the pools' ${local.database_max_clients} connections at the roster's maxima: raise it (and the tier) or put a pooler in front."
    }
  }
}

resource "google_sql_database" "social" {
  name     = "social"
  instance = google_sql_database_instance.main.name
}

# The administrator, a member of Cloud SQL's cloudsqlsuperuser. Only the
# chart's migration Jobs use it (database.adminSecret): each makes its
# service's role, with the password of its <service>-url (secrets.tf), and
# that role's schema, and closes everything else to it. The service roles are
# not Cloud SQL users: those would all be cloudsqlsuperuser members.
resource "random_password" "database_admin" {
  length  = 32
  special = false
}

resource "google_sql_user" "admin" {
  name     = "social-admin"
  instance = google_sql_database_instance.main.name
  password = random_password.database_admin.result
}

resource "random_password" "database" {
  for_each = toset(local.database_services)
  length   = 32
  special  = false
}
