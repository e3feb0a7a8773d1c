# make_refit.R -- flexmix refit() standard errors for gmoe's inference tests.
#
# Run from the repo root:   Rscript tests/data/flexmix_refit/make_refit.R
# Needs:  apt-get install -y r-base-core r-cran-flexmix r-cran-jsonlite
#
# 1. Simulates (set.seed(SEED)) a 2-expert, 1-covariate softmax-gated Gaussian MoE,
#    n = 2000, x ~ U(-2, 2), in flexmix's convention (gate baseline = component 1):
#        P(z = 2 | x) = plogis(0.5 + 2 x)
#        y | z = 1 ~ N( 1 + 2.0 x, 0.5^2),   y | z = 2 ~ N(-1 - 1.5 x, 0.7^2)
#    writes refit_data.csv (x1, y; %.17g) and re-reads it, so that R fits exactly the
#    numbers Python reads.
# 2. Fits flexmix(y ~ x1, k = 2, model = FLXMRglm(family = "gaussian"),
#                 concomitant = FLXPmultinom(~ x1),
#                 control = list(tolerance = 1e-10, iter.max = 5000, minprior = 0))
#    from NSTART random starts (set.seed(SEED + r)) and once from the posterior
#    probabilities of the truth; keeps the best logLik.
# 3. rf <- refit(m)  (method "optim": BFGS on the observed log-likelihood from the
#    flexmix estimates, then optim(hessian = TRUE), i.e. a finite-difference Hessian of
#    flexmix's analytic gradient; vcov = -solve(hessian)).  Parameters of refit:
#      model.1_Comp.j_coef.(Intercept), model.1_Comp.j_coef.x1, model.1_Comp.j_log(sigma),
#      concomitant_Comp.2.(Intercept), concomitant_Comp.2.x1
#    i.e. the expert sd on the LOG scale (FLXgetParameters for FLXMRglm gaussian), the
#    gate as logit of component 2 against component 1.  summary(refit(m)) prints the
#    coefficient and concomitant tables (not log(sigma)); all SEs are sqrt(diag(vcov)).
# 4. Writes refit.json: the truth, the flexmix fit, refit's estimates, SEs and vcov
#    (by name), the summary tables, R/flexmix versions and the command.

suppressPackageStartupMessages({library(flexmix); library(jsonlite)})

OUT <- "tests/data/flexmix_refit"
SEED <- 20240909L
NSTART <- 10L
N <- 2000L
CTRL <- list(tolerance = 1e-10, iter.max = 5000L, minprior = 0)
TRUTH <- list(gate = c(0.5, 2),                      # component 2 vs 1: (Intercept), x1
              beta = cbind(c(1, 2), c(-1, -1.5)),    # rows (Intercept), x1; cols comps
              sigma = c(0.5, 0.7))

# ---------------------------------------------------------------- data
set.seed(SEED)
x <- runif(N, -2, 2)
z <- 1L + as.integer(runif(N) < plogis(TRUTH$gate[1] + TRUTH$gate[2] * x))
mu <- TRUTH$beta[1, z] + TRUTH$beta[2, z] * x
y <- rnorm(N, mu, TRUTH$sigma[z])
csv <- file.path(OUT, "refit_data.csv")
writeLines(c("x1,y", sprintf("%.17g,%.17g", x, y)), csv)
df <- read.csv(csv, colClasses = "numeric")
stopifnot(identical(df$x1, x), identical(df$y, y))

# ---------------------------------------------------------------- fits
truth_post <- function(df) {
  l1 <- dnorm(df$y, TRUTH$beta[1, 1] + TRUTH$beta[2, 1] * df$x1, TRUTH$sigma[1])
  l2 <- dnorm(df$y, TRUTH$beta[1, 2] + TRUTH$beta[2, 2] * df$x1, TRUTH$sigma[2])
  p2 <- plogis(TRUTH$gate[1] + TRUTH$gate[2] * df$x1)
  P <- cbind((1 - p2) * l1, p2 * l2)
  P / rowSums(P)
}
fit_one <- function(cluster = NULL) {
  args <- list(formula = y ~ x1, data = df, model = FLXMRglm(family = "gaussian"),
               concomitant = FLXPmultinom(~ x1), control = CTRL)
  if (is.null(cluster)) args$k <- 2L else args$cluster <- cluster
  m <- tryCatch(do.call(flexmix, args), error = function(e) NULL)
  if (!is.null(m) && m@k != 2L) NULL else m
}
fits <- list(truth_start = fit_one(truth_post(df)))
for (r in seq_len(NSTART)) { set.seed(SEED + r); fits[[paste0("random_", r)]] <- fit_one() }
fits <- Filter(Negate(is.null), fits)
lls <- vapply(fits, function(m) as.numeric(logLik(m)), 0)
best <- names(which.max(lls))
m <- fits[[best]]

# ---------------------------------------------------------------- refit
rf <- refit(m)
coef <- rf@coef
vcov <- rf@vcov
se <- sqrt(diag(vcov))
summ <- summary(rf)          # printed below, as users see it
print(summ)
table_of <- function(cm) {
  cm <- unclass(cm)
  lapply(setNames(seq_len(nrow(cm)), rownames(cm)),
         function(i) as.list(setNames(cm[i, ], colnames(cm))))
}
summary_tables <- list(
  components = lapply(rf@components[[1]], table_of),
  concomitant = lapply(rf@concomitant, table_of))

gate <- parameters(m, which = "concomitant")
res <- list(
  command = "Rscript tests/data/flexmix_refit/make_refit.R",
  info = list(R_version = R.version.string,
              flexmix_version = as.character(packageVersion("flexmix")),
              jsonlite_version = as.character(packageVersion("jsonlite"))),
  seed = SEED, n = N, csv = "refit_data.csv",
  truth = list(gate_comp2_vs_comp1 = TRUTH$gate, expert_coef = TRUTH$beta,
               sigma = TRUTH$sigma),
  flexmix_call = paste0("flexmix(y ~ x1, k = 2, model = FLXMRglm(family = \"gaussian\"), ",
                        "concomitant = FLXPmultinom(~ x1), control = list(tolerance = ",
                        "1e-10, iter.max = 5000, minprior = 0))"),
  starts = list(names = names(lls), logliks = unname(lls), best = best),
  flexmix_fit = list(loglik = as.numeric(logLik(m)), iter = m@iter,
                     converged = m@converged,
                     expert_coef = unname(parameters(m)[c("coef.(Intercept)", "coef.x1"), ]),
                     sigma = unname(parameters(m)["sigma", ]),
                     gate_comp2_vs_comp1 = unname(gate[, 2])),
  refit = list(
    note = paste("refit(m) with method 'optim'; SEs = sqrt(diag(vcov)); log(sigma) is",
                 "the natural log of the expert standard deviation; gate = logit of",
                 "component 2 against component 1"),
    names = names(coef), coef = unname(coef), se = unname(se),
    vcov = unname(vcov),
    loglik_at_coef = FLXlogLikfun(m)(coef)),
  summary_tables = summary_tables)
writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(OUT, "refit.json"))
cat("best start:", best, " logLik:", lls[[best]], "\n")
print(cbind(coef = coef, se = se))
