# Fit one GAMM with mgcv's bam and write its tables, curves and differences as CSV.
#
#   Rscript mgcv_fit.R CONFIG.csv
#
# CONFIG.csv has columns key,value: data (a CSV with columns y, level, time, token,
# start), out (a folder), levels (tab-separated, the reference first), coding
# (difference | per_level), k, random (true | false), random_k, rho_mode (none | fixed |
# estimate), rho, grid (the time values for curves, tab-separated), pairs (a;b pairs,
# tab-separated), re_test (true | false), threads, simultaneous (0, or the level of
# itsadug-style simultaneous bands: each curve's multiplier of the se, from 10,000 draws of
# the fixed coefficients' posterior). Bands are formed from the se in Python.
#
# The model is Beguš & Zhou's:
#   y ~ level + s(time) + s(time, by = level) + s(time, token, bs = "fs", m = 1)
# with `level` an ordered factor under treatment contrasts (difference smooths), fitted
# by bam with fREML, discrete = TRUE and an AR(1) correction restarting at each token.
# Curves and differences follow itsadug's get_difference: lpmatrix rows with the
# random-smooth columns zeroed, se = sqrt(rowSums((X Vp) * X)).

args <- commandArgs(trailingOnly = TRUE)
config <- read.csv(args[1], stringsAsFactors = FALSE, colClasses = "character")
get <- function(key) {
  value <- config$value[config$key == key]
  if (length(value) != 1) stop(paste("config has no single value for", key))
  value
}
split_tabs <- function(text) if (nchar(text) == 0) character(0) else strsplit(text, "\t", fixed = TRUE)[[1]]

suppressPackageStartupMessages(library(mgcv))
out <- get("out")
levels <- split_tabs(get("levels"))
coding <- get("coding")
k <- as.integer(get("k"))
random <- get("random") == "true"
random_k <- as.integer(get("random_k"))
threads <- as.integer(get("threads"))

d <- read.csv(get("data"), stringsAsFactors = FALSE, colClasses = c(level = "character", token = "character"))
d$level <- factor(d$level, levels = levels)
if (coding == "difference") {
  d$level <- as.ordered(d$level)
  contrasts(d$level) <- "contr.treatment"
}
d$token <- factor(d$token)
d$start <- as.logical(d$start)

terms <- "y ~ level"
if (coding == "difference") {
  terms <- paste0(terms, " + s(time, k = ", k, ") + s(time, by = level, k = ", k, ")")
} else {
  terms <- paste0(terms, " + s(time, by = level, k = ", k, ")")
}
if (random) {
  terms <- paste0(terms, " + s(time, token, bs = 'fs', m = 1", if (random_k > 0) paste0(", k = ", random_k) else "", ")")
}
formula <- as.formula(terms)

fit_seconds <- 0
rho_mode <- get("rho_mode")
rho <- 0
rho_estimated <- NA
if (rho_mode == "estimate") {
  started <- proc.time()[["elapsed"]]
  first <- bam(formula, data = d, method = "fREML", discrete = TRUE, nthreads = threads)
  fit_seconds <- fit_seconds + proc.time()[["elapsed"]] - started
  rho_estimated <- acf(resid(first), plot = FALSE, lag.max = 1)$acf[2]
  rho <- rho_estimated
} else if (rho_mode == "fixed") {
  rho <- as.numeric(get("rho"))
}

warnings_seen <- character(0)
started <- proc.time()[["elapsed"]]
model <- withCallingHandlers(
  if (rho != 0) {
    bam(formula, data = d, method = "fREML", discrete = TRUE, rho = rho, AR.start = d$start, nthreads = threads)
  } else {
    bam(formula, data = d, method = "fREML", discrete = TRUE, nthreads = threads)
  },
  warning = function(w) {
    warnings_seen <<- c(warnings_seen, conditionMessage(w))
    invokeRestart("muffleWarning")
  }
)
fit_seconds <- fit_seconds + proc.time()[["elapsed"]] - started

started <- proc.time()[["elapsed"]]
summary_ <- summary(model, re.test = get("re_test") == "true")
summary_seconds <- proc.time()[["elapsed"]] - started

p_table <- summary_$p.table
write.csv(data.frame(term = rownames(p_table), estimate = p_table[, 1], se = p_table[, 2],
                     stat = p_table[, 3], p = p_table[, 4], df = model$df.residual),
          file.path(out, "parametric.csv"), row.names = FALSE)
s_table <- summary_$s.table
smooths <- data.frame(term = rownames(s_table), edf = s_table[, "edf"], ref_df = s_table[, "Ref.df"],
                      stat = s_table[, "F"], p = s_table[, "p-value"])
# Without re.test, summary() leaves the random smooth out of its table; keep its row
# (the paper's Table 1 has it) with its edf, and no test.
for (term in model$smooth) {
  if (!(term$label %in% smooths$term)) {
    edf <- sum(model$edf[term$first.para:term$last.para])
    smooths <- rbind(smooths, data.frame(term = term$label, edf = edf, ref_df = NA, stat = NA, p = NA))
  }
}
write.csv(smooths, file.path(out, "smooths.csv"), row.names = FALSE)

raw <- resid(model)
whitened <- if (!is.null(model$std.rsd)) model$std.rsd else raw
lag1 <- function(x) acf(x, plot = FALSE, lag.max = 1)$acf[2]
write.csv(data.frame(
  key = c("mgcv_version", "r_version", "scale", "r_sq", "dev_expl", "reml", "n_coef", "n_obs", "rho",
          "rho_estimated", "acf1_raw", "acf1_whitened", "fit_seconds", "summary_seconds", "residual_df"),
  value = c(as.character(packageVersion("mgcv")), R.version.string, model$sig2, summary_$r.sq,
            summary_$dev.expl, model$gcv.ubre, length(coef(model)), nrow(d), rho, rho_estimated,
            lag1(raw), lag1(whitened), fit_seconds, summary_seconds, model$df.residual)
), file.path(out, "fit.csv"), row.names = FALSE)
writeLines(if (length(warnings_seen)) warnings_seen else character(0), file.path(out, "warnings.txt"))

# Curves and differences with the random smooths excluded (their columns zeroed).
grid <- as.numeric(split_tabs(get("grid")))
random_columns <- integer(0)
for (smooth in model$smooth) {
  if (inherits(smooth, "fs.interaction") || inherits(smooth, "random.effect")) {
    random_columns <- c(random_columns, smooth$first.para:smooth$last.para)
  }
}
design <- function(level) {
  new <- data.frame(time = grid, level = factor(rep(level, length(grid)), levels = levels),
                    token = factor(rep(levels(d$token)[1], length(grid)), levels = levels(d$token)))
  if (coding == "difference") {
    new$level <- as.ordered(new$level)
    # predict.gam applies the model's own contrasts
  }
  X <- predict(model, newdata = new, type = "lpmatrix")
  X[, random_columns] <- 0
  X
}
beta <- coef(model)
simultaneous <- as.numeric(get("simultaneous"))
if (simultaneous > 0) {
  fixed <- setdiff(seq_along(beta), random_columns)
  set.seed(0)
  draws <- rmvn(10000, rep(0, length(fixed)), model$Vp[fixed, fixed])
}
with_crit <- function(frame, X) {
  # itsadug's sim.ci: the quantile (type 8) of the largest |deviation| / se over the grid
  if (simultaneous > 0) {
    shown <- frame$se > 0
    deviations <- abs(X[shown, fixed, drop = FALSE] %*% t(draws)) / frame$se[shown]
    frame$crit <- quantile(apply(deviations, 2, max), simultaneous, type = 8, names = FALSE)
  }
  frame
}
curves <- do.call(rbind, lapply(levels, function(level) {
  X <- design(level)
  with_crit(data.frame(level = level, time = grid, fit = as.vector(X %*% beta),
                       se = sqrt(pmax(rowSums((X %*% model$Vp) * X), 0))), X)
}))
write.csv(curves, file.path(out, "curves.csv"), row.names = FALSE)
pairs <- split_tabs(get("pairs"))
differences <- do.call(rbind, lapply(pairs, function(pair) {
  both <- strsplit(pair, ";", fixed = TRUE)[[1]]
  X <- design(both[1]) - design(both[2])
  with_crit(data.frame(a = both[1], b = both[2], time = grid, diff = as.vector(X %*% beta),
                       se = sqrt(pmax(rowSums((X %*% model$Vp) * X), 0))), X)
}))
if (is.null(differences)) differences <- data.frame(a = character(0), b = character(0), time = numeric(0),
                                                    diff = numeric(0), se = numeric(0))
write.csv(differences, file.path(out, "differences.csv"), row.names = FALSE)
