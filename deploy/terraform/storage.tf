# The media bucket: private (uniform access, public access prevention
# enforced); clients fetch images through var.media_public_base_url (a CDN
# or domain in front of it). The media service speaks S3: GCS's XML API at
# https://storage.googleapis.com with an HMAC key of its own service account.
# Encrypted with Google-managed keys: the images are public once published,
# and this module has no CMEK key ring.
#trivy:ignore:GCP-0066
resource "google_storage_bucket" "media" {
  #checkov:skip=CKV_GCP_62:Access logs go to Cloud Audit Logs (data access logs on the project), not to a second bucket
  name                        = "${var.project_id}-${local.name}-media"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = local.labels

  # The media service's orphan sweep deletes expired uploads and orphaned
  # objects itself (media/service.py); versioning keeps what it deletes for
  # a week (an undo for a bad sweep), then the lifecycle rules remove it.
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 3
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  # Uploads the service never finished.
  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }
}

resource "google_service_account" "media" {
  account_id   = "${local.name}-media"
  display_name = "The media service's object store access (HMAC)"
  depends_on   = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "media" {
  bucket = google_storage_bucket.media.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.media.email}"
}

resource "google_storage_hmac_key" "media" {
  service_account_email = google_service_account.media.email
}
