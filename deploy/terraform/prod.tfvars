project_id            = "social-prod"
region                = "europe-west1"
environment           = "prod"
node_pool_max_nodes   = 36
database_tier         = "db-custom-8-32768"
redis_mode            = "instance"
redis_memory_size_gb  = 5
media_public_base_url = "https://media.example.com"

master_authorized_cidrs = {
  bastion = "10.10.15.0/28"
}
github_repository  = "example/social"
github_environment = "production"
