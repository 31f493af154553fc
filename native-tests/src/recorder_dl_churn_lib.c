/* A library that recorder_dl_deadlock loads and unloads over and over. */
int recorder_dl_churn_value(void);
int recorder_dl_churn_value(void)
{
    return 42;
}
