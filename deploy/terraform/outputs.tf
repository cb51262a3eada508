# What the Helm chart needs from this environment, shaped as a values file
# (tests/deploy/test_terraform.py checks every path exists in the chart's
# values.yaml):
#   terraform output -json helm_values > gke-values.json
#   helm upgrade --install social deploy/helm/social -n social \
#     -f deploy/helm/social/values-production.yaml -f gke-values.json
output "helm_values" {
  description = "The chart's values that come from this environment."
  value = {
    global = {
      image = {
        registry = local.image_registry
      }
    }
    database = {
      existingSecret = google_secret_manager_secret.pods["${local.name}-database"].secret_id
      adminSecret = {
        name = google_secret_manager_secret.pods["${local.name}-database"].secret_id
        key  = "admin-url"
      }
    }
    # The relay waits for the replica each primary has (redis.tf).
    redis = {
      existingSecret = google_secret_manager_secret.pods["${local.name}-redis"].secret_id
      caKey          = "ca.crt"
      waitReplicas   = local.redis_replicas
    }
    # GCS's S3-compatible XML API, which takes "auto" as the signing region.
    objects = {
      endpointUrl    = "https://storage.googleapis.com"
      region         = "auto"
      bucket         = google_storage_bucket.media.name
      publicBaseUrl  = var.media_public_base_url
      existingSecret = google_secret_manager_secret.pods["${local.name}-objects"].secret_id
    }
  }
}

# The GitHub environment's variables (Settings > Environments > staging or
# production) that .github/workflows/deploy-service.yml reads; GATEWAY_URL,
# the public address in front of the gateway, is set by hand.
output "github_environment_variables" {
  description = "Variables of the GitHub environment var.github_environment."
  value = {
    GCP_WORKLOAD_IDENTITY_PROVIDER = google_iam_workload_identity_pool_provider.github.name
    GCP_SERVICE_ACCOUNT            = google_service_account.release.email
    IMAGE_REGISTRY                 = local.image_registry
    GKE_PROJECT                    = var.project_id
    GKE_LOCATION                   = google_container_cluster.main.location
    GKE_CLUSTER                    = google_container_cluster.main.name
    K8S_NAMESPACE                  = local.namespace
  }
}

output "external_secrets_service_account" {
  description = "Annotate ESO's Kubernetes service account with iam.gke.io/gcp-service-account=<this>."
  value       = google_service_account.external_secrets.email
}

output "cluster_dns_endpoint" {
  description = "The control plane's DNS endpoint (kubectl, helm): gcloud container clusters get-credentials --dns-endpoint."
  value       = google_container_cluster.main.control_plane_endpoints_config[0].dns_endpoint_config[0].endpoint
}

# The External Secrets Operator's objects that turn the Secret Manager
# secrets (secrets.tf) into the Kubernetes Secrets the chart reads:
#   terraform output -raw external_secrets_manifest | kubectl apply -f -
output "external_secrets_manifest" {
  description = "A ClusterSecretStore on this project's Secret Manager and one ExternalSecret per secret, in the chart's namespace."
  value = join("---\n", concat(
    [yamlencode({
      apiVersion = "external-secrets.io/v1"
      kind       = "ClusterSecretStore"
      metadata   = { name = local.name }
      spec = {
        provider = {
          gcpsm = { projectID = var.project_id }
        }
      }
    })],
    [for name in keys(local.secrets) : yamlencode({
      apiVersion = "external-secrets.io/v1"
      kind       = "ExternalSecret"
      metadata   = { name = name, namespace = local.namespace }
      spec = {
        refreshInterval = "1h"
        secretStoreRef  = { kind = "ClusterSecretStore", name = local.name }
        target          = { name = name }
        dataFrom        = [{ extract = { key = name } }]
      }
    })],
  ))
}
