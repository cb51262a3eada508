# The pods' secrets live in Secret Manager, one secret per Kubernetes Secret
# the chart reads, its value a JSON object of that Secret's keys. They reach
# the cluster through the External Secrets Operator, not the Secret Manager
# CSI driver: the chart reads them as Kubernetes Secrets (env secretKeyRef:
# database.existingSecret, redis.existingSecret, objects.existingSecret), so
# ESO's ExternalSecrets (dataFrom extract, README.md) make exactly those
# Secrets and no pod spec changes; the CSI driver would need volumes in every
# pod. ESO authenticates with Workload Identity as the account below: no key
# file anywhere.
locals {
  database_host = google_sql_database_instance.main.private_ip_address

  # Redis's URL and CA, of whichever of the two (redis.tf) exists: one()
  # fails the plan should there be both or neither. TLS (rediss) in both.
  # The instance: its AUTH string, on 6378. The cluster: no password (see
  # redis.tf), its discovery endpoint, and cluster=true, which makes the
  # services use the cluster client (the chart has no value for it: the URL
  # is the one place that says so). Each one's CA is its own alone, so what
  # it signed is that Redis: the chain is verified, the name is not (Google
  # does not document that the certificate names the address where TLS
  # clients look, its subject alternative names, and envoyproxy/ratelimit#409
  # reports it as the common name only; libs/common/tests/test_redis_tls.py
  # shows both).
  redis_url = one(concat(
    [for redis in google_redis_instance.main : "rediss://:${redis.auth_string}@${redis.host}:${redis.port}/0?ssl_check_hostname=false"],
    [for redis in google_redis_cluster.main : "rediss://${redis.discovery_endpoints[0].address}:${redis.discovery_endpoints[0].port}/0?ssl_check_hostname=false&cluster=true"],
  ))
  redis_ca = one(concat(
    [for redis in google_redis_instance.main : join("", [for cert in redis.server_ca_certs : cert.cert])],
    [for redis in google_redis_cluster.main : join("\n", flatten(redis.managed_server_ca[0].ca_certs[*].certificates))],
  ))

  secrets = {
    # database.existingSecret: <service>-url per database service, and
    # admin-url (database.adminSecret) for the migration Jobs.
    "${local.name}-database" = jsonencode(merge(
      {
        for service in local.database_services :
        "${service}-url" => "postgresql://${service}:${random_password.database[service].result}@${local.database_host}:5432/${google_sql_database.social.name}?sslmode=require"
      },
      {
        admin-url = "postgresql://${google_sql_user.admin.name}:${random_password.database_admin.result}@${local.database_host}:5432/${google_sql_database.social.name}?sslmode=require"
      },
    ))
    # redis.existingSecret: the URL (redis.key) and the CA that signed the
    # server's certificate (redis.caKey), above.
    "${local.name}-redis" = jsonencode({
      url      = local.redis_url
      "ca.crt" = local.redis_ca
    })
    # objects.existingSecret: accessKeyIdKey and secretAccessKeyKey.
    "${local.name}-objects" = jsonencode({
      access-key-id     = google_storage_hmac_key.media.access_id
      secret-access-key = google_storage_hmac_key.media.secret
    })
  }
}

resource "google_secret_manager_secret" "pods" {
  #checkov:skip=CKV_GCP_128:Encrypted with Google-managed keys; no CMEK key ring in this module
  for_each  = toset(keys(local.secrets))
  secret_id = each.value
  labels    = local.labels

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "pods" {
  for_each    = toset(keys(local.secrets))
  secret      = google_secret_manager_secret.pods[each.value].id
  secret_data = local.secrets[each.value]
}

# The External Secrets Operator's identity (its Kubernetes service account
# external-secrets/external-secrets, through Workload Identity).
resource "google_service_account" "external_secrets" {
  account_id   = "${local.name}-eso"
  display_name = "External Secrets Operator of ${local.name}"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account_iam_member" "external_secrets_workload_identity" {
  service_account_id = google_service_account.external_secrets.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[external-secrets/external-secrets]"
  depends_on         = [google_container_cluster.main]
}

# Access to these secrets only, not the project's.
resource "google_secret_manager_secret_iam_member" "external_secrets" {
  for_each  = google_secret_manager_secret.pods
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.external_secrets.email}"
}
