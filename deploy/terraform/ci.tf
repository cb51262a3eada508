# The release workflows' identity (.github/workflows/deploy-service.yml): a
# GitHub OIDC token exchanged through Workload Identity Federation for a
# short-lived token of the release service account; no key exists. Only the
# deploy jobs of this repository's main branch in this environment's GitHub
# environment (whose reviewers gate production) get one.
resource "google_iam_workload_identity_pool" "github" {
  workload_identity_pool_id = "${local.name}-github"
  display_name              = "GitHub Actions"
  depends_on                = [google_project_service.apis]
}

resource "google_iam_workload_identity_pool_provider" "github" {
  #checkov:skip=CKV_GCP_125:The condition pins sub to repo:<var.github_repository>:environment:<var.github_environment> (and ref to main); checkov does not resolve the variables and reads no owner/name
  workload_identity_pool_id          = google_iam_workload_identity_pool.github.workload_identity_pool_id
  workload_identity_pool_provider_id = "github"
  display_name                       = "GitHub Actions OIDC"

  attribute_mapping = {
    "google.subject"        = "assertion.sub"
    "attribute.repository"  = "assertion.repository"
    "attribute.ref"         = "assertion.ref"
    "attribute.environment" = "assertion.environment"
  }
  # A job in a GitHub environment has sub = repo:<owner/name>:environment:<name>.
  attribute_condition = "assertion.sub == 'repo:${var.github_repository}:environment:${var.github_environment}' && assertion.ref == 'refs/heads/main'"

  oidc {
    issuer_uri = "https://token.actions.githubusercontent.com"
  }
}

resource "google_service_account" "release" {
  account_id   = "${local.name}-release"
  display_name = "Releases of ${local.name} from GitHub Actions"
  depends_on   = [google_project_service.apis]
}

resource "google_service_account_iam_member" "release_workload_identity" {
  service_account_id = google_service_account.release.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.github.name}/attribute.repository/${var.github_repository}"
}

# Push this environment's images (immutable tags) and nothing else.
resource "google_artifact_registry_repository_iam_member" "release" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.release.email}"
}

# In IAM, only what it takes to find the cluster and reach its API; in
# Kubernetes, the `admin` role in the chart's namespace alone, bound once by
# an administrator (README: `kubectl create rolebinding social-release`), so
# that a release reads no Secret of any other namespace and cannot touch the
# cluster, its nodes or IAM.
resource "google_project_iam_member" "release" {
  project = var.project_id
  role    = "roles/container.clusterViewer"
  member  = "serviceAccount:${google_service_account.release.email}"
}
