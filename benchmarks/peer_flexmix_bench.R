# peer_flexmix_bench.R -- time one flexmix fit of a softmax-gated Gaussian
# mixture of experts on a CSV written by the Python benchmark.
#
# Usage:  Rscript benchmarks/peer_flexmix_bench.R data.csv out.csv [K]
#   data.csv : header row; response column "y", every other column is a
#              covariate (used in both the experts and the gate), e.g. x1,...,xd,y
#   out.csv  : written (overwritten) with ONE line, no header, columns
#                n,d,k,seconds,loglik,iter,converged,k_fitted,flexmix_version
#              seconds = elapsed time of the flexmix() call only (system.time),
#              loglik = logLik(m) (%.17g), iter = m@iter, converged = m@converged
#              (TRUE/FALSE), k_fitted = m@k (< k if flexmix dropped components).
#              If flexmix errors, seconds is still filled and loglik/iter are NA.
#   K        : number of experts (default 2)
#
# The fit is flexmix's default single run:
#   set.seed(1)
#   flexmix(y ~ x1 + ... + xd, data = d, k = K,
#           model = FLXMRglm(family = "gaussian"),
#           concomitant = FLXPmultinom(~ x1 + ... + xd))
# default control: random hard initial assignment, iter.max = 200,
# tolerance = 1e-6 (relative change of the log-likelihood), minprior = 0.05.
# Needs: apt-get install -y r-base-core r-cran-flexmix

suppressPackageStartupMessages(library(flexmix))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 2) stop("usage: Rscript peer_flexmix_bench.R data.csv out.csv [K]")
inp <- args[1]; out <- args[2]
K <- if (length(args) >= 3) as.integer(args[3]) else 2L

d <- read.csv(inp, colClasses = "numeric")
if (!"y" %in% names(d)) stop("no column 'y' in ", inp)
xs <- setdiff(names(d), "y")
fy <- as.formula(paste("y ~", paste(xs, collapse = " + ")))
fg <- as.formula(paste("~", paste(xs, collapse = " + ")))

set.seed(1)
m <- NULL
tm <- system.time(
  m <- tryCatch(flexmix(fy, data = d, k = K, model = FLXMRglm(family = "gaussian"),
                        concomitant = FLXPmultinom(fg)),
                error = function(e) { message("flexmix error: ", conditionMessage(e)); NULL })
)
ok <- !is.null(m)
line <- sprintf("%d,%d,%d,%.6f,%s,%s,%s,%s,%s",
                nrow(d), length(xs), K, tm[["elapsed"]],
                if (ok) sprintf("%.17g", as.numeric(logLik(m))) else "NA",
                if (ok) as.character(m@iter) else "NA",
                if (ok) as.character(m@converged) else "NA",
                if (ok) as.character(m@k) else "NA",
                packageDescription("flexmix")$Version)
writeLines(line, out)
