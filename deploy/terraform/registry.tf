# The fleet's images: <region>-docker.pkg.dev/<project>/<repository>, the
# chart's global.image.registry.
locals {
  image_registry = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Encrypted with Google-managed keys; the images hold no secrets (no CMEK key ring in this module)
  location      = var.region
  repository_id = local.name
  format        = "DOCKER"
  description   = "Images of the social fleet (${var.environment})"
  labels        = local.labels

  docker_config {
    immutable_tags = true
  }

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository_iam_member" "nodes" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${google_service_account.nodes.email}"
}
