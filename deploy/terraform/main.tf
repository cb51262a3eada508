# One environment of the social fleet on Google Cloud. Files by concern:
# network.tf, gke.tf, database.tf, redis.tf, storage.tf, registry.tf,
# secrets.tf, outputs.tf (what the Helm chart needs).

locals {
  name = "social-${var.environment}"

  # The fleet's roster, the one list of the services: those with
  # `database: true` get a role and a URL each (database.tf, secrets.tf).
  roster            = yamldecode(file("${path.module}/../../libs/common/src/social_common/fleet.yaml"))
  database_services = sort([for name, service in local.roster.services : name if service.database])

  # The chart's production values: the pods' database pools (database.tf).
  production_values = yamldecode(file("${path.module}/../helm/social/values-production.yaml"))

  # The namespace the chart is installed in (one release per namespace).
  namespace = "social"

  labels = {
    app         = "social"
    environment = var.environment
    managed-by  = "terraform"
  }
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "binaryauthorization.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "dns.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "networkconnectivity.googleapis.com",
    "redis.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}
