project_id            = "social-staging"
region                = "europe-west1"
environment           = "staging"
subnet_cidr           = "10.30.0.0/20"
pods_cidr             = "10.32.0.0/14"
services_cidr         = "10.36.0.0/20"
master_cidr           = "172.16.0.16/28"
node_pool_max_nodes   = 6
database_tier         = "db-custom-2-8192"
redis_mode            = "instance"
redis_memory_size_gb  = 1
media_public_base_url = "https://media.staging.example.com"

master_authorized_cidrs = {
  bastion = "10.30.15.0/28"
}
github_repository  = "example/social"
github_environment = "staging"
