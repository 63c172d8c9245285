#!/usr/bin/env bash
# The PR gate for familyc plans: every specs/NAME.yaml must have plans/NAME.plan.json exactly as
# `familyc plan` writes it now; with --base, a Markdown comment says how each plan changed against the base.
#
#   scripts/plan_gate.sh                                        # pre-commit, .ci/run: the stale-plan check
#   scripts/plan_gate.sh --base origin/main --comment out.md    # the pull-request workflow
#
# Options:
#   --base REF      compare every plan with REF's (`git show REF:plans/NAME.plan.json`): a changed plan gets
#                   `familyc diff BASE NEW --format markdown` in the comment; a new spec, or one removed, says so
#   --comment FILE  write the Markdown comment there (written even when the gate fails); needs --base
#   --root DIR      the repository (default: the git top level of the working directory, else the directory)
# Environment: FAMILYC, the familyc command (default: `familyc` on PATH, else DIR/.venv/bin/familyc).
# Planning is torch-free: a plain `pip install -e .` is enough.
#
# Exit codes: 0 every plan is up to date; 1 a plan is stale or missing, or a spec does not compile (each named,
# with the command that regenerates it); 2 usage (an unknown option, a base ref git does not know, no familyc).
set -euo pipefail

usage() { echo "usage: $0 [--base REF [--comment FILE]] [--root DIR]" >&2; exit 2; }

base="" comment="" root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) [ $# -ge 2 ] || usage; base=$2; shift 2 ;;
    --comment) [ $# -ge 2 ] || usage; comment=$2; shift 2 ;;
    --root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "plan_gate: unknown option $1" >&2; usage ;;
  esac
done
if [ -n "$comment" ] && [ -z "$base" ]; then
  echo "plan_gate: --comment needs --base (what the plans are compared with)" >&2; exit 2
fi
case "$comment" in ""|/*) ;; *) comment="$PWD/$comment" ;; esac  # relative to where it was called from
if [ -z "$root" ]; then
  root=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
fi
cd "$root"

familyc=${FAMILYC:-}
if [ -z "$familyc" ]; then
  if command -v familyc >/dev/null 2>&1; then familyc=familyc
  elif [ -x .venv/bin/familyc ]; then familyc=.venv/bin/familyc
  else echo "plan_gate: familyc is not installed: pip install -e . (planning needs no torch)" >&2; exit 2
  fi
fi

base_commit=""
if [ -n "$base" ]; then
  if ! base_commit=$(git rev-parse --verify --quiet "$base^{commit}"); then
    echo "plan_gate: git does not know the base $base (in CI: actions/checkout with fetch-depth: 0)" >&2; exit 2
  fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sections="$tmp/sections.md"
: > "$sections"
stale=()    # "plans/NAME.plan.json|why|what to do|the command"
changed=0

regenerate() { echo "familyc plan specs/$1.yaml -o plans/$1.plan.json"; }

shopt -s nullglob
specs=(specs/*.yaml)
if [ ${#specs[@]} -eq 0 ]; then
  echo "plan_gate: no specs/*.yaml in $root" >&2
fi
for spec in "${specs[@]}"; do
  name=$(basename "$spec" .yaml)
  plan="plans/$name.plan.json"
  new="$plan"  # the plan the spec compiles to now: the checked-in one when it is up to date
  status=0
  if [ ! -f "$plan" ]; then
    echo "$plan: missing (specs/$name.yaml has no plan)" >&2
    stale+=("$plan|missing|create it with|$(regenerate "$name")")
    status=1
  else
    "$familyc" plan "$spec" --check "$plan" || status=$?
  fi
  if [ $status -ne 0 ]; then
    new="$tmp/$name.new.plan.json"
    if ! "$familyc" plan "$spec" --format json > "$new" 2> "$tmp/$name.err"; then
      [ -f "$plan" ] || cat "$tmp/$name.err" >&2  # (plan --check has shown it)
      stale+=("$plan|its spec does not compile|fix what this reports, then regenerate the plan|familyc validate $spec")
      if [ -n "$base" ]; then
        { printf '**`%s`**\n\nThe spec does not compile:\n\n```\n' "$spec"; cat "$tmp/$name.err"; printf '```\n\n'; } \
          >> "$sections"
        changed=$((changed + 1))
      fi
      continue
    fi
    if [ -f "$plan" ]; then stale+=("$plan|stale|regenerate it with|$(regenerate "$name")"); fi
  fi
  [ -n "$base" ] || continue

  old="$tmp/$name.base.plan.json"
  if ! git show "$base_commit:$plan" > "$old" 2>/dev/null; then
    { printf '**`%s`**\n\nA new spec: %s has no `%s`.\n\n' "$spec" "$base" "$plan"
      printf '<details><summary>the new plan</summary>\n\n'
      "$familyc" show "$new" --format markdown || true
      printf '\n</details>\n\n'; } >> "$sections"
    changed=$((changed + 1))
    continue
  fi
  if cmp -s "$old" "$new"; then
    continue
  fi
  { printf '**`%s`**\n\n' "$spec"
    if ! "$familyc" diff "$old" "$new" --format markdown 2>"$tmp/$name.diff.err"; then
      printf 'familyc diff could not compare the plans:\n\n```\n'; cat "$tmp/$name.diff.err"; printf '```\n'
    fi
    printf '\n'; } >> "$sections"
  changed=$((changed + 1))
done

if [ -n "$base" ]; then  # plans of the base whose spec is gone
  while IFS= read -r path; do
    name=$(basename "$path" .plan.json)
    case "$path" in plans/*.plan.json) ;; *) continue ;; esac
    if [ ! -f "specs/$name.yaml" ]; then
      printf '**`specs/%s.yaml`**\n\nRemoved: %s had it (`%s`).\n\n' "$name" "$base" "$path" >> "$sections"
      changed=$((changed + 1))
    fi
  done < <(git ls-tree --name-only "$base_commit" plans/ 2>/dev/null || true)
fi

if [ ${#stale[@]} -gt 0 ]; then
  echo >&2
  echo "plan_gate: ${#stale[@]} plan(s) not up to date:" >&2
  for entry in "${stale[@]}"; do
    IFS='|' read -r plan why what run <<< "$entry"
    echo "  $plan ($why): $what: $run" >&2
  done
else
  echo "plan_gate: ${#specs[@]} plan(s) up to date"
fi

if [ -n "$comment" ]; then
  {
    echo "<!-- familyc-plan-gate -->"
    echo "## familyc plans"
    echo
    short=$(git rev-parse --short "$base_commit")
    if [ $changed -eq 0 ]; then
      echo "No plan changes against \`$base\` ($short)."
    else
      echo "$changed spec(s) change their plan against \`$base\` ($short)."
    fi
    echo
    if [ ${#stale[@]} -gt 0 ]; then
      echo "**The gate fails: ${#stale[@]} checked-in plan(s) are not what their spec compiles to now.**"
      echo "The diffs below are against what each spec compiles to. Regenerate and commit:"
      echo
      for entry in "${stale[@]}"; do
        IFS='|' read -r plan why what run <<< "$entry"
        echo "- \`$plan\` ($why): $what: \`$run\`"
      done
      echo
    fi
    cat "$sections"
  } > "$comment"
fi

[ ${#stale[@]} -eq 0 ]
