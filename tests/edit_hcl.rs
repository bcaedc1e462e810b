//! Adoption edits to Terraform configuration (`act::edit_hcl`): a literal attribute changes in
//! place and every other byte of the file stays; expressions, modules and count/for_each have no
//! honest edit; an unmanaged EC2 resource gets an `import` block and a resource skeleton.

use driftwarden::act::edit_hcl::{
    HclError, declares, import_file, remove_attribute, resource_name, set_attribute,
    skeleton_attributes, terraform_type,
};
use serde_json::{Value, json};

const MAIN_TF: &str = r#"# Web tier. Sizes reviewed 2026-10 (see capacity.md).
terraform {
  required_version = ">= 1.5"
}

variable "env" {
  type    = string
  default = "prod"
}

resource "aws_instance" "web" {
  ami           = "ami-0abc1234" # Ubuntu 24.04, pinned
  instance_type = "t3.medium"
  monitoring    = true

  root_block_device {
    volume_size = 30 # GiB
    volume_type = "gp3"
  }

  tags = {
    Name        = "web-${var.env}"
    Team        = "storefront"
    CostCenter  = "cc-42"
  }
}

resource "aws_instance" "batch" {
  count         = 2
  ami           = "ami-0abc1234"
  instance_type = var.batch_type
}

resource "aws_security_group" "web" {
  name        = "web"
  description = "web tier"

  ingress {
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
"#;

fn segs(p: &str) -> Vec<String> {
    p.split('/').skip(1).map(str::to_string).collect()
}

/// The lines that differ, for files with the same line count.
fn changed_lines(old: &str, new: &str) -> Vec<(usize, String)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    assert_eq!(a.len(), b.len(), "line count changed:\n{new}");
    a.iter()
        .zip(&b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (_, y))| (i + 1, y.to_string()))
        .collect()
}

#[test]
fn a_literal_changes_in_place_keeping_comments_and_alignment() {
    let out = set_attribute(
        MAIN_TF,
        "aws_instance.web",
        &segs("/instance_type"),
        &json!("t3.large"),
    )
    .unwrap();
    assert_eq!(
        changed_lines(MAIN_TF, &out),
        vec![(13, "  instance_type = \"t3.large\"".to_string())]
    );
    let out = set_attribute(
        MAIN_TF,
        "aws_instance.web",
        &segs("/ami"),
        &json!("ami-0def"),
    )
    .unwrap();
    assert_eq!(
        changed_lines(MAIN_TF, &out),
        vec![(
            12,
            "  ami           = \"ami-0def\" # Ubuntu 24.04, pinned".to_string()
        )]
    );
    // Nested blocks, addressed the way Terraform's attributes list them.
    let out = set_attribute(
        MAIN_TF,
        "aws_instance.web",
        &segs("/root_block_device/0/volume_size"),
        &json!(50),
    )
    .unwrap();
    assert_eq!(
        changed_lines(MAIN_TF, &out),
        vec![(17, "    volume_size = 50 # GiB".to_string())]
    );
    // A key of a map literal.
    let out = set_attribute(
        MAIN_TF,
        "aws_instance.web",
        &segs("/tags/Team"),
        &json!("sre"),
    )
    .unwrap();
    assert_eq!(
        changed_lines(MAIN_TF, &out),
        vec![(23, "    Team        = \"sre\"".to_string())]
    );
    // Booleans.
    let out = set_attribute(
        MAIN_TF,
        "aws_instance.web",
        &segs("/monitoring"),
        &json!(false),
    )
    .unwrap();
    assert_eq!(
        changed_lines(MAIN_TF, &out),
        vec![(14, "  monitoring    = false".to_string())]
    );
}

#[test]
fn additions_and_removals_take_their_own_line() {
    let out = set_attribute(
        MAIN_TF,
        "aws_instance.web",
        &segs("/tags/Owner"),
        &json!("ops"),
    )
    .unwrap();
    let want = MAIN_TF.replace(
        "    CostCenter  = \"cc-42\"\n",
        "    CostCenter  = \"cc-42\"\n    Owner = \"ops\"\n",
    );
    assert_eq!(out, want);
    let out = set_attribute(
        MAIN_TF,
        "aws_instance.web",
        &segs("/ebs_optimized"),
        &json!(true),
    )
    .unwrap();
    let want = MAIN_TF.replace(
        "    CostCenter  = \"cc-42\"\n  }\n}\n",
        "    CostCenter  = \"cc-42\"\n  }\n  ebs_optimized = true\n}\n",
    );
    assert_eq!(out, want);
    let out = remove_attribute(MAIN_TF, "aws_instance.web", &segs("/tags/CostCenter")).unwrap();
    assert_eq!(out, MAIN_TF.replace("    CostCenter  = \"cc-42\"\n", ""));
    let out = remove_attribute(MAIN_TF, "aws_instance.web", &segs("/monitoring")).unwrap();
    assert_eq!(out, MAIN_TF.replace("  monitoring    = true\n", ""));
}

#[test]
fn expressions_modules_and_counts_have_no_honest_edit() {
    let no_edit = |addr: &str, path: &str, v: Value| {
        let e = set_attribute(MAIN_TF, addr, &segs(path), &v).unwrap_err();
        assert!(matches!(e, HclError::NoHonestEdit(_)), "{addr} {path}: {e}");
        e.to_string()
    };
    assert!(no_edit("aws_instance.web", "/tags/Name", json!("web-x")).contains("template"));
    assert!(no_edit("aws_instance.batch[0]", "/ami", json!("ami-1")).contains("count"));
    assert!(no_edit("module.app.aws_instance.web", "/ami", json!("ami-1")).contains("module"));
    assert!(no_edit("aws_instance.web", "/ami", json!("(masked)")).contains("secret"));
    // A resource this file does not declare: stale, not an edit.
    let e = set_attribute(MAIN_TF, "aws_instance.gone", &segs("/ami"), &json!("x")).unwrap_err();
    assert!(matches!(e, HclError::Stale(_)), "{e}");
    assert!(declares(MAIN_TF, "aws_security_group.web"));
    assert!(!declares(MAIN_TF, "aws_security_group.db"));
}

#[test]
fn unmanaged_ec2_resources_get_an_import_block_and_a_skeleton() {
    let live = json!({
        "InstanceId": "i-0abc123",
        "ImageId": "ami-0fff",
        "InstanceType": "t3.micro",
        "SubnetId": "subnet-1",
        "Tags": [{"Key": "Name", "Value": "hand-made"}, {"Key": "team", "Value": "sre"}]
    });
    let tf = terraform_type("instance").unwrap();
    let attrs = skeleton_attributes(tf, &live);
    let text = import_file(
        tf,
        &resource_name("i-0abc123"),
        "i-0abc123",
        &attrs,
        "Adopted by driftwarden.",
    )
    .unwrap();
    assert_eq!(
        text,
        "# Adopted by driftwarden.\nimport {\n  to = aws_instance.i_0abc123\n  id = \"i-0abc123\"\n}\n\nresource \"aws_instance\" \"i_0abc123\" {\n  ami           = \"ami-0fff\"\n  instance_type = \"t3.micro\"\n  subnet_id     = \"subnet-1\"\n\n  tags = {\n    Name = \"hand-made\"\n    team = \"sre\"\n  }\n}\n"
    );
    assert!(declares(&text, "aws_instance.i_0abc123"));
    assert!(terraform_type("placement-group").is_none());
}
