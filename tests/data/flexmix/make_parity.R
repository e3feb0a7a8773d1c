# make_parity.R -- flexmix parity data for gmoe's Python tests.
#
# Run from the repo root:   Rscript tests/data/flexmix/make_parity.R
# Needs:  apt-get install -y r-base-core r-cran-flexmix   (jsonlite not needed)
#
# For each of 4 softmax-gated Gaussian mixture-of-experts truths it
#   1. simulates a data set with a fixed seed and writes <name>.csv (x1..xd, y;
#      %.17g), then re-reads the CSV so that R fits exactly what Python reads;
#   2. fits  flexmix(y ~ x1 + ..., k = K, model = FLXMRglm(family = "gaussian"),
#                    concomitant = FLXPmultinom(~ x1 + ...),
#                    control = list(tolerance = 1e-10, iter.max = 5000, minprior = 0))
#      from NSTART random starts (set.seed(SEED_START + r) before start r;
#      flexmix's default random hard assignment) and once from the posterior
#      probabilities of the truth (cluster = matrix), keeping the best logLik;
#   3. writes <name>.json with the truth, the best flexmix fit (raw, flexmix's
#      component order; gate baseline = component 1), the per-component MLE
#      variances recomputed from flexmix's posteriors, the log-likelihood of the
#      flexmix parameters recomputed in R, and an exact-MLE polish (plain EM in R
#      with exact Newton gate M-step and MLE variances, started at the best
#      flexmix fit; NOT flexmix) with its observed-log-lik gradient.
#
# Conventions in the JSON:
#   * matrices are arrays of rows;  "expert_coef" is (1 + d) x K (rows:
#     intercept, x1..xd; columns: components);  "gate_coef" is (1 + d) x K with
#     column 1 identically 0 (softmax logits eta_ij = [1, x_i] . gate_coef[, j]).
#   * "sigma_flexmix" is what flexmix reports (parameters(m)["sigma", ]):
#       sigma = sqrt(sum(fit$weights * fit$residuals^2 / mean(fit$weights)) /
#                    (nrow(x) - fit$rank))
#     (FLXMRglm(family = "gaussian")@fit, flexmix 2.3-18), i.e.
#       sigma^2 = [sum_i w_ij r_ij^2 / sum_i w_ij] * n / (n - (1 + d)),
#     with n the TOTAL sample size (not sum_i w_ij).  flexmix uses this sigma
#     inside its EM, so its fixed point is not exactly the MLE.
#   * "sigma2_mle" = sum_i post_ij r_ij^2 / sum_i post_ij with flexmix's final
#     posteriors and coefficients.
#   * "perm_to_truth"[j] = index (1-based) of the fitted component matched to
#     true component j (by expert coefficients; all K! permutations tried).

suppressPackageStartupMessages(library(flexmix))

OUT <- "tests/data/flexmix"
NSTART <- as.integer(Sys.getenv("NSTART", "20"))
CTRL <- list(tolerance = 1e-10, iter.max = 5000L, minprior = 0)
T0 <- proc.time()[["elapsed"]]

# ---------------------------------------------------------------- truths
# gate: (1+d) x K logit coefficients, column 1 = 0 (baseline, as in flexmix)
# beta: (1+d) x K expert coefficients; sigma: K noise sds; x ~ U(-2, 2)^d
TRUTHS <- list(
  a = list(K = 2L, d = 1L, n = 2000L, seed = 101L,      # = peer_flexmix.R model
           gate = cbind(c(0, 0), c(0, 3)),
           beta = cbind(c(1, 2), c(-1, -1.5)),
           sigma = c(0.5, 0.5)),
  b = list(K = 2L, d = 3L, n = 3000L, seed = 102L,
           gate = cbind(c(0, 0, 0, 0), c(0.5, 2, -1.5, 1)),
           beta = cbind(c(1, 2, -1, 0.5), c(-1, -1.5, 1, 2)),
           sigma = c(0.5, 0.6)),
  c = list(K = 3L, d = 1L, n = 3000L, seed = 103L,
           gate = cbind(c(0, 0), c(1.5, 2.5), c(-1, 5)),
           beta = cbind(c(1, 2), c(-1.5, -1), c(2.5, 0.5)),
           sigma = c(0.5, 0.4, 0.6)),
  d = list(K = 3L, d = 3L, n = 4000L, seed = 104L,
           gate = cbind(c(0, 0, 0, 0), c(0.5, 2, -1, 0.5), c(-0.5, -1, 2, 1.5)),
           beta = cbind(c(1, 2, -1, 0.5), c(-1, -1.5, 1, 2), c(2, 0.5, 1.5, -1)),
           sigma = c(0.5, 0.6, 0.45))
)

# ---------------------------------------------------------------- helpers
logsumexp_rows <- function(L) { m <- apply(L, 1, max); m + log(rowSums(exp(L - m))) }
softmax_rows <- function(E) { E <- E - apply(E, 1, max); P <- exp(E); P / rowSums(P) }

# log of g_ij * N(y_i | mu_ij, s2_j): n x K
log_joint <- function(X1, y, beta, s2, gate) {
  E <- X1 %*% gate
  lg <- E - logsumexp_rows(E)
  mu <- X1 %*% beta
  ld <- sapply(seq_along(s2), function(j) dnorm(y, mu[, j], sqrt(s2[j]), log = TRUE))
  lg + ld
}
loglik <- function(X1, y, beta, s2, gate) sum(logsumexp_rows(log_joint(X1, y, beta, s2, gate)))
post_prob <- function(X1, y, beta, s2, gate) {
  L <- log_joint(X1, y, beta, s2, gate); exp(L - logsumexp_rows(L))
}

simulate <- function(tr) {
  set.seed(tr$seed)
  X <- matrix(runif(tr$n * tr$d, -2, 2), tr$n, tr$d)
  X1 <- cbind(1, X)
  P <- softmax_rows(X1 %*% tr$gate)
  u <- runif(tr$n)
  z <- 1L + rowSums(u > t(apply(P, 1, cumsum)))
  z <- pmin(z, tr$K)
  mu <- rowSums(X1 * t(tr$beta[, z, drop = FALSE]))
  y <- rnorm(tr$n, mu, tr$sigma[z])
  df <- as.data.frame(X); names(df) <- paste0("x", seq_len(tr$d)); df$y <- y
  list(df = df, z = z)
}

write_csv17 <- function(df, path) {
  lines <- do.call(sprintf, c(list(paste(rep("%.17g", ncol(df)), collapse = ",")),
                              unname(as.list(df))))
  writeLines(c(paste(names(df), collapse = ","), lines), path)
}

# minimal JSON writer: numbers as %.17g, matrices as arrays of rows
to_json <- function(v, ind = "") {
  ind2 <- paste0(ind, "  ")
  num <- function(x) ifelse(is.na(x), "null", ifelse(is.infinite(x),
                      ifelse(x > 0, "1e999", "-1e999"), sprintf("%.17g", x)))
  if (is.null(v)) return("null")
  if (is.list(v)) {
    nm <- names(v)
    items <- vapply(seq_along(v), function(i) to_json(v[[i]], ind2), "")
    if (is.null(nm)) return(paste0("[", paste(items, collapse = ", "), "]"))
    return(paste0("{\n", paste0(ind2, "\"", nm, "\": ", items, collapse = ",\n"),
                  "\n", ind, "}"))
  }
  if (is.matrix(v)) return(paste0("[", paste(apply(v, 1, function(r) to_json(as.vector(r), ind2)),
                                             collapse = ", "), "]"))
  if (is.character(v)) s <- paste0("\"", gsub("\"", "\\\\\"", v), "\"")
  else if (is.logical(v)) s <- ifelse(is.na(v), "null", ifelse(v, "true", "false"))
  else if (is.integer(v)) s <- as.character(v)
  else s <- num(v)
  if (length(v) == 1 && is.null(attr(v, "array"))) s else paste0("[", paste(s, collapse = ", "), "]")
}
arr <- function(v) structure(v, array = TRUE)   # force a JSON array even if length 1

perms <- function(K) if (K == 1) matrix(1L) else
  do.call(rbind, lapply(seq_len(K), function(i) cbind(i, perms(K - 1)[, , drop = FALSE] +
                                                       (perms(K - 1) >= i))))
match_truth <- function(beta_fit, beta_true) {
  P <- perms(ncol(beta_true))
  cost <- apply(P, 1, function(p) sum((beta_fit[, p, drop = FALSE] - beta_true)^2))
  as.integer(P[which.min(cost), ])
}

# ------------------------------------------------- exact-MLE polish (not flexmix)
gate_newton <- function(X1, post, gate, maxit = 100L) {
  K <- ncol(post); p <- ncol(X1)
  obj <- function(G) sum(post * (G - logsumexp_rows(G)))
  for (it in seq_len(maxit)) {
    E <- X1 %*% gate; P <- softmax_rows(E); f0 <- obj(E)
    g <- as.vector(crossprod(X1, post[, -1, drop = FALSE] - P[, -1, drop = FALSE]))
    H <- matrix(0, p * (K - 1), p * (K - 1))
    for (j in 2:K) for (l in 2:K) {
      w <- P[, j] * ((j == l) - P[, l])
      H[(j - 2) * p + 1:p, (l - 2) * p + 1:p] <- -crossprod(X1, X1 * w)
    }
    step <- -solve(H, g)
    t <- 1
    repeat {
      new <- gate; new[, -1] <- gate[, -1] + t * matrix(step, p)
      if (obj(X1 %*% new) >= f0 - 1e-12 * abs(f0) || t < 1e-8) break
      t <- t / 2
    }
    gate <- new
    if (max(abs(g)) < 1e-11 * nrow(X1)) break
  }
  gate
}
obs_grad <- function(X1, y, beta, s2, gate) {
  post <- post_prob(X1, y, beta, s2, gate)
  R <- y - X1 %*% beta
  gb <- sapply(seq_along(s2), function(j) crossprod(X1, post[, j] * R[, j]) / s2[j])
  gs <- sapply(seq_along(s2), function(j) sum(post[, j] * (R[, j]^2 / (2 * s2[j]^2) - 1 / (2 * s2[j]))))
  gg <- crossprod(X1, post - softmax_rows(X1 %*% gate))[, -1]
  c(beta = max(abs(gb)), sigma2 = max(abs(gs)), gate = max(abs(gg)))
}
polish_mle <- function(X1, y, beta, s2, gate, maxit = 20000L, gtol = 1e-8) {
  ll <- loglik(X1, y, beta, s2, gate)
  for (it in seq_len(maxit)) {
    if (max(obs_grad(X1, y, beta, s2, gate)) < gtol) { it <- it - 1L; break }
    post <- post_prob(X1, y, beta, s2, gate)
    for (j in seq_along(s2)) {
      w <- post[, j]
      beta[, j] <- solve(crossprod(X1, X1 * w), crossprod(X1, w * y))
      s2[j] <- sum(w * (y - X1 %*% beta[, j])^2) / sum(w)
    }
    gate <- gate_newton(X1, post, gate)
    ll <- loglik(X1, y, beta, s2, gate)
  }
  list(beta = beta, s2 = s2, gate = gate, loglik = ll, iter = it)
}

# ---------------------------------------------------------------- fitting
fit_flexmix <- function(df, K, d, cluster = NULL) {
  xs <- paste0("x", seq_len(d))
  fy <- as.formula(paste("y ~", paste(xs, collapse = " + ")))
  fg <- as.formula(paste("~", paste(xs, collapse = " + ")))
  m <- tryCatch(
    if (is.null(cluster))
      flexmix(fy, data = df, k = K, model = FLXMRglm(family = "gaussian"),
              concomitant = FLXPmultinom(fg), control = CTRL)
    else
      flexmix(fy, data = df, cluster = cluster, model = FLXMRglm(family = "gaussian"),
              concomitant = FLXPmultinom(fg), control = CTRL),
    error = function(e) { message("  flexmix error: ", conditionMessage(e)); NULL })
  if (!is.null(m) && m@k != K) { message("  fit lost components (k = ", m@k, ")"); m <- NULL }
  m
}

summarize_fit <- function(m, X1, y, truth) {
  n <- nrow(X1); p <- ncol(X1); K <- m@k
  pm <- parameters(m)
  beta <- unname(pm[grep("^coef", rownames(pm)), , drop = FALSE])
  sig <- unname(pm["sigma", ])
  gate <- unname(as.matrix(parameters(m, which = "concomitant")))
  post <- posterior(m)
  R <- y - X1 %*% beta
  s2mle <- colSums(post * R^2) / colSums(post)
  sig_formula <- sqrt(s2mle * n / (n - p))          # documented flexmix formula
  list(
    loglik = as.numeric(logLik(m)),
    iter = as.integer(m@iter), converged = m@converged,
    expert_coef = beta, sigma_flexmix = arr(sig), sigma2_mle = arr(s2mle),
    sigma_mle = arr(sqrt(s2mle)),
    gate_coef = gate,
    prior = arr(unname(m@prior)),
    perm_to_truth = arr(match_truth(beta, truth$beta)),
    loglik_recomputed_flexmix_sigma = loglik(X1, y, beta, sig^2, gate),
    loglik_recomputed_mle_sigma = loglik(X1, y, beta, s2mle, gate),
    sigma_formula_check_max_rel_diff = max(abs(sig_formula / sig - 1))
  )
}

info <- list(R_version = R.version.string,
             flexmix_version = packageDescription("flexmix")$Version,
             nnet_version = packageDescription("nnet")$Version)
cat(sprintf("%s | flexmix %s | nnet %s\n", info$R_version, info$flexmix_version,
            info$nnet_version))

for (name in names(TRUTHS)) {
  tr <- TRUTHS[[name]]
  t_set <- proc.time()[["elapsed"]]
  sim <- simulate(tr)
  csv <- file.path(OUT, paste0(name, ".csv"))
  write_csv17(sim$df, csv)
  df <- read.csv(csv)                       # fit exactly what is on disk
  X1 <- cbind(1, as.matrix(df[, paste0("x", seq_len(tr$d)), drop = FALSE]))
  y <- df$y
  ll_truth <- loglik(X1, y, tr$beta, tr$sigma^2, tr$gate)

  # truth-based start
  post_truth <- post_prob(X1, y, tr$beta, tr$sigma^2, tr$gate)
  m_truth <- fit_flexmix(df, tr$K, tr$d, cluster = post_truth)

  # random starts
  SEED_START <- 1000L * tr$seed
  starts <- vector("list", NSTART); ll_starts <- rep(NA_real_, NSTART)
  it_starts <- rep(NA_integer_, NSTART)
  for (r in seq_len(NSTART)) {
    set.seed(SEED_START + r)
    m <- fit_flexmix(df, tr$K, tr$d)
    if (!is.null(m)) {
      starts[[r]] <- m; ll_starts[r] <- as.numeric(logLik(m)); it_starts[r] <- m@iter
    }
  }
  best_r <- which.max(ll_starts)
  ll_truth_start <- if (is.null(m_truth)) NA_real_ else as.numeric(logLik(m_truth))
  use_truth <- !is.na(ll_truth_start) &&
    (length(best_r) == 0 || ll_truth_start > ll_starts[best_r])
  best <- if (use_truth) m_truth else starts[[best_r]]
  fs <- summarize_fit(best, X1, y, tr)

  # exact-MLE polish from the best flexmix fit
  pol <- polish_mle(X1, y, fs$expert_coef, as.vector(fs$sigma2_mle), fs$gate_coef)
  grad <- obs_grad(X1, y, pol$beta, pol$s2, pol$gate)

  res <- list(
    name = name, n = tr$n, K = tr$K, d = tr$d, csv = basename(csv),
    seed_data = tr$seed, info = info,
    command = "Rscript tests/data/flexmix/make_parity.R",
    flexmix_call = sprintf(paste0("flexmix(y ~ %s, k = %d, model = FLXMRglm(family = \"gaussian\"), ",
                                  "concomitant = FLXPmultinom(~ %s), control = list(tolerance = 1e-10, ",
                                  "iter.max = 5000, minprior = 0))"),
                           paste0("x", seq_len(tr$d), collapse = " + "), tr$K,
                           paste0("x", seq_len(tr$d), collapse = " + ")),
    truth = list(expert_coef = tr$beta, sigma = arr(tr$sigma), gate_coef = tr$gate,
                 loglik = ll_truth,
                 component_counts = arr(tabulate(sim$z, tr$K))),
    best_source = if (use_truth) "truth_start" else sprintf("random_start_%d", best_r),
    truth_start_loglik = ll_truth_start,
    truth_start_iter = if (is.null(m_truth)) NA_integer_ else as.integer(m_truth@iter),
    random_start_seeds = arr(SEED_START + seq_len(NSTART)),
    random_start_logliks = arr(ll_starts),
    random_start_iters = arr(it_starts),
    flexmix = fs,
    mle_polished = list(
      note = paste("NOT flexmix: plain EM in R with exact Newton gate M-step and MLE",
                   "variances, started at the best flexmix fit (same component order);",
                   "stopped when every |d loglik / d theta| < 1e-8; grad_max_abs = max |d loglik / d theta|",
                   "per block (beta, sigma^2, gate) at the result."),
      loglik = pol$loglik, iter = as.integer(pol$iter),
      expert_coef = pol$beta, sigma2 = arr(pol$s2), sigma = arr(sqrt(pol$s2)),
      gate_coef = pol$gate, grad_max_abs = as.list(grad))
  )
  secs <- proc.time()[["elapsed"]] - t_set   # printed only, so the JSON is reproducible
  writeLines(to_json(res), file.path(OUT, paste0(name, ".json")))
  cat(sprintf(paste0("[%s] n=%d K=%d d=%d  best=%s  flexmix logLik=%.6f (iter %d)  ",
                     "truth-start=%.6f  recomputed(mle sigma)=%.6f  polished MLE=%.6f ",
                     "(iter %d, grad %.1e)  truth=%.3f  random starts: %d/%d within 1e-6 of best  %.1fs\n"),
              name, tr$n, tr$K, tr$d, res$best_source, fs$loglik, fs$iter, ll_truth_start,
              fs$loglik_recomputed_mle_sigma, pol$loglik, pol$iter, max(grad), ll_truth,
              sum(abs(ll_starts - max(ll_starts, na.rm = TRUE)) < 1e-6, na.rm = TRUE),
              NSTART, secs))
}
cat(sprintf("total %.1fs\n", proc.time()[["elapsed"]] - T0))
